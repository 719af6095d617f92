import type { QueryClient } from "@tanstack/react-query";
import { api } from "../../api/client";
import { unwrap } from "../../api/errors";

/**
 * Ends the session. An SSO session answers with the identity provider's logout URL,
 * which the browser must visit too (else the next sign-in passes silently there).
 */
export async function signOut(queryClient: QueryClient): Promise<string | null> {
  const result = await api.POST("/auth/logout");
  if (result.response.status !== 401) unwrap(result);
  queryClient.clear();
  const body: unknown = result.data;
  if (body && typeof body === "object" && "redirect" in body) {
    const redirect = body.redirect;
    if (typeof redirect === "string") return redirect;
  }
  return null;
}
