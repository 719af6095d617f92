// The typed API client: openapi-fetch over the generated schema (`make openapi`).
// Every request carries the session cookie (same origin); every cookie-authenticated
// write carries the CSRF token; any 401 hands control to the sign-in flow.
import createClient, { type Client, type Middleware } from "openapi-fetch";
import type { components, paths } from "./schema";

export type Schemas = components["schemas"];
export type ApiClient = Client<paths>;

export const CSRF_COOKIE = "oculab_csrf";
export const CSRF_HEADER = "X-CSRF-Token";
const WRITES = new Set(["POST", "PUT", "PATCH", "DELETE"]);
// A 401 from these means "wrong credentials", not "your session ended".
const CREDENTIAL_CHECKS = ["/api/auth/local/login"];

export function readCookie(name: string, cookies: string = document.cookie): string | null {
  for (const part of cookies.split(";")) {
    const [key, ...rest] = part.trim().split("=");
    if (key === name) return decodeURIComponent(rest.join("="));
  }
  return null;
}

/** Adds X-CSRF-Token to writes that ride on the session cookie (not bearer calls). */
export const csrfMiddleware: Middleware = {
  onRequest({ request }) {
    if (!WRITES.has(request.method.toUpperCase()) || request.headers.has("Authorization")) {
      return request;
    }
    const token = readCookie(CSRF_COOKIE);
    if (token) request.headers.set(CSRF_HEADER, token);
    return request;
  },
};

export function unauthorizedMiddleware(onUnauthorized: () => void): Middleware {
  return {
    onResponse({ request, response }) {
      const path = new URL(request.url, window.location.origin).pathname;
      if (response.status === 401 && !CREDENTIAL_CHECKS.includes(path)) onUnauthorized();
      return response;
    },
  };
}

export interface ClientOptions {
  baseUrl?: string;
  fetch?: typeof globalThis.fetch;
  onUnauthorized?: () => void;
}

export function createApiClient(options: ClientOptions = {}): ApiClient {
  const client = createClient<paths>({
    baseUrl: options.baseUrl ?? window.location.origin,
    credentials: "same-origin",
    // Looked up per call, so tests (and polyfills) can replace the global fetch.
    fetch: (request: Request) => (options.fetch ?? globalThis.fetch)(request),
  });
  client.use(csrfMiddleware);
  client.use(unauthorizedMiddleware(() => (options.onUnauthorized ?? notifyUnauthorized)()));
  return client;
}

// The app's one client. The router registers what a 401 does (go to sign-in).
const listeners = new Set<() => void>();
/** For requests made outside the client (XMLHttpRequest uploads) that got a 401. */
export function notifyUnauthorized(): void {
  for (const listener of listeners) listener();
}
export function onUnauthorized(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export const api = createApiClient();
