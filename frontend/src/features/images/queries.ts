import { infiniteQueryOptions, queryOptions } from "@tanstack/react-query";
import { api, type Schemas } from "../../api/client";
import { unwrap } from "../../api/errors";
import { keys } from "../../api/keys";

export type ImageStatus = Schemas["ImageStatus"];
export type ImageItem = Schemas["ImageRead"];
export type Split = Schemas["Split"];
export const STATUSES: ImageStatus[] = ["unlabeled", "predicted", "reviewed"];
export const SPLITS: Split[] = ["train", "val", "test"];
// Keyset pages: the grid fetches the next one as the end comes near.
export const IMAGES_PAGE = 300;

export function isImageStatus(value: string | null): value is ImageStatus {
  return value !== null && (STATUSES as string[]).includes(value);
}

export function isSplit(value: string | null): value is Split {
  return value !== null && (SPLITS as string[]).includes(value);
}

export const projectQuery = (projectId: number) =>
  queryOptions({
    queryKey: keys.project(projectId),
    queryFn: async () =>
      unwrap(await api.GET("/api/projects/{project_id}", { params: { path: { project_id: projectId } } })),
  });

export const imagesQuery = (projectId: number, status: ImageStatus | null, split: Split | null = null) =>
  infiniteQueryOptions({
    queryKey: keys.images(projectId, status, split),
    queryFn: async ({ pageParam }) =>
      unwrap(
        await api.GET("/api/projects/{project_id}/images", {
          params: {
            path: { project_id: projectId },
            query: {
              limit: IMAGES_PAGE,
              cursor: pageParam ?? undefined,
              status: status ?? undefined,
              split: split ?? undefined,
            },
          },
        }),
      ),
    initialPageParam: null as string | null,
    getNextPageParam: (last) => last.next_cursor ?? undefined,
  });
