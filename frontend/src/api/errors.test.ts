import { describe, expect, it } from "vitest";
import { ApiError, errorMessage, unwrap } from "./errors";

describe("unwrap", () => {
  it("returns the data of a success", () => {
    expect(unwrap({ data: { id: 1 }, response: new Response(null, { status: 200 }) })).toEqual({
      id: 1,
    });
  });

  it("throws the server's detail with the status and Retry-After", () => {
    const response = new Response(null, { status: 429, headers: { "Retry-After": "42" } });
    try {
      unwrap({ error: { detail: "too many attempts" }, response });
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ApiError);
      expect(error).toMatchObject({ status: 429, detail: "too many attempts", retryAfter: 42 });
    }
  });

  it("explains a network failure in words", () => {
    expect(errorMessage(new TypeError("Failed to fetch"))).toMatch(/Cannot reach the server/);
  });
});
