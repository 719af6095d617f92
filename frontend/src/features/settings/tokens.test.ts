import { describe, expect, it } from "vitest";
import { curlExample, parseExpiry, tokenStatus } from "./tokens";

describe("parseExpiry", () => {
  it("takes whole days within the server's range, or none", () => {
    expect(parseExpiry("90", false)).toEqual({ days: 90 });
    expect(parseExpiry(" 1 ", false)).toEqual({ days: 1 });
    expect(parseExpiry("3650", false)).toEqual({ days: 3650 });
    expect(parseExpiry("anything", true)).toEqual({ days: null });
    for (const bad of ["0", "3651", "1.5", "-3", "", "ten"]) expect(parseExpiry(bad, false)).toHaveProperty("error");
  });
});

describe("tokenStatus", () => {
  const now = Date.parse("2025-06-01T00:00:00Z");
  it("tells revoked, expired and active tokens apart", () => {
    expect(tokenStatus({ revoked_at: "2025-05-01T00:00:00Z", expires_at: null }, now)).toBe("revoked");
    expect(tokenStatus({ revoked_at: null, expires_at: "2025-05-31T23:59:59Z" }, now)).toBe("expired");
    expect(tokenStatus({ revoked_at: null, expires_at: "2025-06-02T00:00:00Z" }, now)).toBe("active");
    expect(tokenStatus({ revoked_at: null, expires_at: null }, now)).toBe("active");
  });
});

describe("curlExample", () => {
  it("is a command that asks the API who the token belongs to", () => {
    expect(curlExample("http://lab:8000", "ocl_abc-_1")).toBe(
      'curl -H "Authorization: Bearer ocl_abc-_1" http://lab:8000/api/me',
    );
  });
});
