// Personal API tokens (server/tokens): the rules the page shows, as pure functions.
import type { Schemas } from "../../api/client";

export type Token = Schemas["TokenRead"];
export type CreatedToken = Schemas["TokenCreated"];

// As the server enforces them (server/tokens/schemas.py, service.py).
export const MAX_EXPIRY_DAYS = 3650;
export const DEFAULT_EXPIRY_DAYS = 90;
export const MAX_ACTIVE_TOKENS = 50;

export type TokenStatus = "active" | "expired" | "revoked";

export function tokenStatus(token: Pick<Token, "revoked_at" | "expires_at">, now: number): TokenStatus {
  if (token.revoked_at) return "revoked";
  if (token.expires_at && Date.parse(token.expires_at) <= now) return "expired";
  return "active";
}

/** The expiry field's value as the API wants it, or why it cannot be sent. */
export function parseExpiry(text: string, never: boolean): { days: number | null } | { error: string } {
  if (never) return { days: null };
  const trimmed = text.trim();
  if (!/^\d+$/.test(trimmed)) return { error: "Give the number of days as a whole number." };
  const days = Number(trimmed);
  if (days < 1 || days > MAX_EXPIRY_DAYS) return { error: `Between 1 and ${MAX_EXPIRY_DAYS} days.` };
  return { days };
}

/** A command to paste in a shell: it asks the API who the token belongs to. */
export function curlExample(origin: string, token: string): string {
  return `curl -H "Authorization: Bearer ${token}" ${origin}/api/me`;
}

/** Copies text: the Clipboard API where the page may use it, else a selected field. */
export async function copyText(text: string, fallbackField?: HTMLInputElement | HTMLTextAreaElement | null): Promise<boolean> {
  try {
    if (navigator.clipboard?.writeText) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // Refused (no permission, not a secure context): try the old way below.
  }
  if (fallbackField) {
    fallbackField.select();
    try {
      return document.execCommand("copy");
    } catch {
      return false;
    }
  }
  return false;
}
