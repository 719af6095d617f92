import { infiniteQueryOptions, queryOptions } from "@tanstack/react-query";
import { api, type Schemas } from "../../api/client";
import { unwrap } from "../../api/errors";
import { keys } from "../../api/keys";

export type QueueItem = Schemas["ImageRead"];
export type Project = Schemas["ProjectDetail"];
export const QUEUE_PAGE = 50;

export const projectQuery = (projectId: number) =>
  queryOptions({
    queryKey: keys.project(projectId),
    queryFn: async () =>
      unwrap(await api.GET("/api/projects/{project_id}", { params: { path: { project_id: projectId } } })),
  });

/** Predicted images, the lowest confidence first (the server's keyset order). */
export const queueQuery = (projectId: number) =>
  infiniteQueryOptions({
    queryKey: [...keys.project(projectId), "review-queue"] as const,
    queryFn: async ({ pageParam }) =>
      unwrap(
        await api.GET("/api/projects/{project_id}/images", {
          params: {
            path: { project_id: projectId },
            query: { status: "predicted", order: "confidence", limit: QUEUE_PAGE, cursor: pageParam ?? undefined },
          },
        }),
      ),
    initialPageParam: null as string | null,
    getNextPageParam: (last) => last.next_cursor ?? undefined,
    // The queue is walked in place: items the user accepted stay listed (as done).
    staleTime: Number.POSITIVE_INFINITY,
    refetchOnWindowFocus: false,
  });

export const boxesQuery = (imageId: number) =>
  queryOptions({
    queryKey: ["review", imageId, "annotations"] as const,
    queryFn: async () =>
      unwrap(
        await api.GET("/api/images/{image_id}/annotations", { params: { path: { image_id: imageId } } }),
      ),
    staleTime: 0,
  });

export async function reviewImage(imageId: number, action: "accept_all" | "reject_all") {
  return unwrap(
    await api.POST("/api/images/{image_id}/review", {
      params: { path: { image_id: imageId } },
      body: { action },
    }),
  );
}
