/** Secrets an Azure URL, connection string or SDK message can carry, with what stays visible before each. */
const SECRETS: readonly RegExp[] = [
  /(SharedAccessSignature=)[^;\s]+/gi, // a SAS token inside a connection string
  /(AccountKey=)[^;\s]+/gi, // a connection string's account key
  /([?&]sig=)[^&\s]+/gi, // a SAS signature in a URL or a bare SAS token
];

/** `text` with every SAS signature and account key replaced by REDACTED, so it may reach a log line. */
export function redact(text: string): string {
  let out = text;
  for (const secret of SECRETS) out = out.replace(secret, '$1REDACTED');
  return out;
}
