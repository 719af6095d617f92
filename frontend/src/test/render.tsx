import { QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { render } from "@testing-library/react";
import type { ReactElement } from "react";
import { createMemoryRouter, RouterProvider } from "react-router";
import { vi } from "vitest";

type Handler = (request: Request) => Response | Promise<Response>;

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });
}

/** Replaces fetch with a table of "METHOD /path" handlers; records the requests. */
export function mockApi(routes: Record<string, Handler>) {
  const requests: Request[] = [];
  vi.stubGlobal(
    "fetch",
    vi.fn(async (request: Request) => {
      requests.push(request.clone());
      const key = `${request.method} ${new URL(request.url).pathname}`;
      const handler = routes[key];
      return handler ? handler(request) : json({ detail: `no mock for ${key}` }, 404);
    }),
  );
  return requests;
}

/** Renders routes in a memory router with a fresh query client (no retries). */
export function renderRoutes(
  routes: { path: string; element: ReactElement }[],
  initialEntry: string,
) {
  const queryClient = new QueryClient({
    defaultOptions: { queries: { retry: false }, mutations: { retry: false } },
  });
  const router = createMemoryRouter(routes, { initialEntries: [initialEntry] });
  render(
    <QueryClientProvider client={queryClient}>
      <RouterProvider router={router} />
    </QueryClientProvider>,
  );
  return { router, queryClient };
}
