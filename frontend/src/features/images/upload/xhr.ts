// Multipart POSTs with upload progress: fetch cannot report how much of a request body
// has gone out (request streams need HTTP/2 and report no progress), XMLHttpRequest can.
// Same rules as the API client: same-origin cookies, the CSRF header, 401 → sign in.
import { CSRF_COOKIE, CSRF_HEADER, notifyUnauthorized, readCookie } from "../../../api/client";

export interface XhrResponse {
  status: number;
  body: unknown;
}

export class NetworkError extends Error {
  constructor(message = "Cannot reach the server; check the connection.") {
    super(message);
    this.name = "NetworkError";
  }
}

export function postForm(
  url: string,
  form: FormData,
  onProgress: (loaded: number, total: number) => void,
  signal?: AbortSignal,
): Promise<XhrResponse> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url);
    xhr.withCredentials = false; // same origin: cookies go anyway
    xhr.setRequestHeader("Accept", "application/json");
    const csrf = readCookie(CSRF_COOKIE);
    if (csrf) xhr.setRequestHeader(CSRF_HEADER, csrf);
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded, event.total);
    };
    xhr.onload = () => {
      let body: unknown = null;
      try {
        body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        body = null;
      }
      if (xhr.status === 401) notifyUnauthorized();
      resolve({ status: xhr.status, body });
    };
    xhr.onerror = () => reject(new NetworkError());
    xhr.ontimeout = () => reject(new NetworkError("The server took too long to answer."));
    xhr.onabort = () => reject(new NetworkError("Canceled."));
    if (signal) {
      if (signal.aborted) {
        reject(new NetworkError("Canceled."));
        return;
      }
      signal.addEventListener("abort", () => xhr.abort(), { once: true });
    }
    xhr.send(form);
  });
}

/** The API's `detail` of an error answer, or a sentence about the status. */
export function detailOf(response: XhrResponse): string {
  const body = response.body;
  if (body && typeof body === "object" && "detail" in body) {
    const detail = body.detail;
    if (typeof detail === "string") return detail;
  }
  if (response.status >= 500) return "The server had a problem; try again in a moment.";
  if (response.status === 0) return "Cannot reach the server; check the connection.";
  return `Request failed (${response.status}).`;
}
