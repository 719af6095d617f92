// What went wrong with an API call, in a form the UI can show.
export class ApiError extends Error {
  readonly status: number;
  readonly detail: string;
  readonly retryAfter: number | null;

  constructor(status: number, detail: string, retryAfter: number | null = null) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
    this.retryAfter = retryAfter;
  }
}

function detailOf(status: number, body: unknown): string {
  if (body && typeof body === "object" && "detail" in body) {
    const detail = body.detail;
    if (typeof detail === "string") return detail;
  }
  if (status >= 500) return "The server had a problem; try again in a moment.";
  return `Request failed (${status}).`;
}

interface Result<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** The data of an openapi-fetch result, or an ApiError (for TanStack Query). */
export function unwrap<T>(result: Result<T>): T {
  const { data, error, response } = result;
  if (!response.ok || error !== undefined) {
    const retry = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
    throw new ApiError(
      response.status,
      detailOf(response.status, error),
      Number.isFinite(retry) ? retry : null,
    );
  }
  return data as T;
}

export function errorMessage(error: unknown): string {
  if (error instanceof ApiError) return error.detail;
  if (error instanceof TypeError) return "Cannot reach the server; check the connection.";
  return error instanceof Error ? error.message : String(error);
}
