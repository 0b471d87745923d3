/** The message of an unknown thrown value, for wrapping it in a typed error: its message, else its name, else its text. */
export function describeCause(err: unknown): string {
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}
