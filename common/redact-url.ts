/** `url` with its password (and a user name given alone, as Redis ACL passwords may be) shown as `***`. */
export function redactUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // Not parseable: blank anything between "//" and "@", where credentials would be.
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
  if (parsed.password !== '') parsed.password = '***';
  else if (parsed.username !== '') parsed.username = '***';
  return parsed.href;
}
