import { describe, expect, it, vi } from "vitest";
import { createApiClient, CSRF_HEADER, readCookie } from "./client";

function recordingFetch(status = 200, body: unknown = {}) {
  const requests: Request[] = [];
  const fetch = vi.fn(async (request: Request) => {
    requests.push(request);
    return new Response(JSON.stringify(body), {
      status,
      headers: { "Content-Type": "application/json" },
    });
  });
  return { fetch: fetch as unknown as typeof globalThis.fetch, requests };
}

describe("the API client", () => {
  it("sends the CSRF cookie's token on every cookie-authenticated write", async () => {
    document.cookie = "oculab_csrf=tok%2Ben";
    const { fetch, requests } = recordingFetch(201);
    const api = createApiClient({ fetch });
    await api.POST("/api/projects", { body: { name: "Cats" } });
    await api.PATCH("/api/projects/{project_id}", {
      params: { path: { project_id: 1 } },
      body: { name: "Dogs" },
    });
    await api.DELETE("/api/projects/{project_id}", { params: { path: { project_id: 1 } } });
    expect(requests.map((r) => r.headers.get(CSRF_HEADER))).toEqual(["tok+en", "tok+en", "tok+en"]);
    expect(requests.every((r) => r.credentials === "same-origin")).toBe(true);
  });

  it("sends no CSRF header on reads or on bearer-token calls", async () => {
    document.cookie = "oculab_csrf=abc";
    const { fetch, requests } = recordingFetch();
    const api = createApiClient({ fetch });
    await api.GET("/api/projects");
    await api.POST("/api/projects", {
      body: { name: "Cats" },
      headers: { Authorization: "Bearer ocl_x" },
    });
    expect(requests.map((r) => r.headers.get(CSRF_HEADER))).toEqual([null, null]);
  });

  it("hands any 401 to the sign-in flow", async () => {
    const onUnauthorized = vi.fn();
    const { fetch } = recordingFetch(401, { detail: "not authenticated" });
    const api = createApiClient({ fetch, onUnauthorized });
    const result = await api.GET("/api/projects");
    expect(result.response.status).toBe(401);
    expect(onUnauthorized).toHaveBeenCalledTimes(1);
  });

  it("treats a 401 from the password check as a wrong password, not an ended session", async () => {
    const onUnauthorized = vi.fn();
    const { fetch } = recordingFetch(401, { detail: "invalid username or password" });
    const api = createApiClient({ fetch, onUnauthorized });
    await api.POST("/api/auth/local/login", { body: { username: "a", password: "b" } });
    expect(onUnauthorized).not.toHaveBeenCalled();
  });

  it("reads one cookie among several", () => {
    expect(readCookie("b", "a=1; b=x%3Dy; c=3")).toBe("x=y");
    expect(readCookie("d", "a=1")).toBeNull();
  });
});
