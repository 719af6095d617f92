// Where to go after sign-in: only a path on this site, never another origin.
export const SIGN_IN_PATH = "/signin";
export const HOME_PATH = "/projects";

export function safeNext(next: string | null | undefined): string {
  if (!next || !next.startsWith("/") || next.startsWith("//") || next.startsWith("/\\")) {
    return HOME_PATH;
  }
  if (next === SIGN_IN_PATH || next.startsWith(`${SIGN_IN_PATH}?`)) return HOME_PATH;
  return next;
}

export function signInPath(from: { pathname: string; search?: string; hash?: string }): string {
  const here = `${from.pathname}${from.search ?? ""}${from.hash ?? ""}`;
  if (from.pathname === SIGN_IN_PATH) return here;
  if (here === "/" || here === HOME_PATH) return SIGN_IN_PATH;
  return `${SIGN_IN_PATH}?next=${encodeURIComponent(here)}`;
}
