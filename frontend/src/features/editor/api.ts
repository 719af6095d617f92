// The editor's server calls: its start (the image, its project, its boxes, its
// neighbours), the boxes again, and the save, whose outcome says what the editor does next.
import { queryOptions } from "@tanstack/react-query";
import { api, type Schemas } from "../../api/client";
import { unwrap } from "../../api/errors";
import { takeEarly } from "../../api/prefetch";
import type { BoxData } from "./boxes";
import type { SaveOutcome } from "./offline";

export type ImageInfo = Schemas["ImageRead"];
export type Project = Schemas["ProjectDetail"];
export type Annotations = Schemas["AnnotationsRead"];

export type EditorStart = Schemas["EditorStart"];

export const editorStartPath = (imageId: number) => `/api/images/${imageId}/editor`;

/**
 * Everything the editor opens with, in one request: the image, its project (classes,
 * colours, role), its boxes and its neighbours. Takes the copy the editor's route
 * started fetching, if any (once), else asks. Read once per opening (no cache): from
 * then on the editor's copy of the boxes is the truth.
 */
export const editorStartQuery = (imageId: number) =>
  queryOptions({
    queryKey: ["images", imageId, "editor"] as const,
    queryFn: async () =>
      (await takeEarly<EditorStart>(editorStartPath(imageId))) ??
      unwrap(await api.GET("/api/images/{image_id}/editor", { params: { path: { image_id: imageId } } })),
    staleTime: 0,
    gcTime: 0,
    refetchOnWindowFocus: false,
    refetchOnReconnect: false,
  });

export const neighborsQuery = (imageId: number) =>
  queryOptions({
    queryKey: ["images", imageId, "neighbors"] as const,
    queryFn: async () =>
      unwrap(
        await api.GET("/api/images/{image_id}/neighbors", { params: { path: { image_id: imageId } } }),
      ),
    staleTime: 0,
  });

/** The image's boxes now. */
export async function loadAnnotations(imageId: number): Promise<Annotations> {
  return unwrap(
    await api.GET("/api/images/{image_id}/annotations", { params: { path: { image_id: imageId } } }),
  );
}

export async function saveAnnotations(
  imageId: number,
  baseRevision: number,
  boxes: BoxData[],
): Promise<SaveOutcome> {
  let result;
  try {
    result = await api.PUT("/api/images/{image_id}/annotations", {
      params: { path: { image_id: imageId } },
      body: { base_revision: baseRevision, boxes },
    });
  } catch {
    return { kind: "offline" }; // no answer: network down or server stopped
  }
  const { data, error, response } = result;
  if (response.ok && data) return { kind: "saved", revision: data.revision };
  if (response.status === 409) {
    const current = (error as { current_revision?: unknown } | undefined)?.current_revision;
    return { kind: "conflict", currentRevision: typeof current === "number" ? current : null };
  }
  // A proxy's 502/503/504, a server restarting, a session that ended (sign in again and
  // the edit is still here): try again later rather than lose the edit.
  if (response.status >= 500 || response.status === 401 || response.status === 429) {
    return { kind: "offline" };
  }
  const detail = (error as { detail?: unknown } | undefined)?.detail;
  return {
    kind: "refused",
    message: typeof detail === "string" ? detail : `The server refused the save (${response.status}).`,
  };
}
