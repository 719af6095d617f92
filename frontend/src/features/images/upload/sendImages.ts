import { type Sender, type SentItem, UploadError } from "./batcher";
import { detailOf, NetworkError, postForm } from "./xhr";

// The next batch would get the same answer: signed out, no longer an owner, no project.
const FATAL = new Set([401, 403, 404]);

/** Sends a batch to POST /api/projects/{id}/images; the batch's tag is its split. */
export function imageSender(projectId: number): Sender {
  return async (files, onProgress, signal, split) => {
    const url = `/api/projects/${projectId}/images${split ? `?split=${encodeURIComponent(split)}` : ""}`;
    const form = new FormData();
    for (const file of files) form.append("files", file);
    let response;
    try {
      response = await postForm(url, form, onProgress, signal);
    } catch (error) {
      throw new UploadError(error instanceof NetworkError ? error.message : String(error));
    }
    const body = response.body as { items?: SentItem[] } | null;
    // 201/200, and 413/415/422 when every file was rejected: per-file items either way.
    if (body && Array.isArray(body.items) && response.status < 500) return body.items;
    throw new UploadError(detailOf(response), response.status, FATAL.has(response.status));
  };
}
