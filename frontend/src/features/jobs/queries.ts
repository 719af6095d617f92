// The job list and one job, from GET /api/jobs and GET /api/jobs/{id}.
import { infiniteQueryOptions, queryOptions } from "@tanstack/react-query";
import { api } from "../../api/client";
import { unwrap } from "../../api/errors";
import { keys } from "../../api/keys";
import { isUnfinished, type Job, type JobState } from "./format";

export const PAGE_SIZE = 50;
// While any listed job is unfinished, the list asks again this often (see JobsPage).
export const LIST_REFRESH_MS = 2000;

export interface JobFilters {
  projectId: number | null;
  state: JobState | null;
  mine: boolean;
}

export function jobsQuery(filters: JobFilters) {
  return infiniteQueryOptions({
    queryKey: ["jobs", "list", filters.projectId ?? "all", filters.state ?? "any", filters.mine] as const,
    queryFn: async ({ pageParam }) =>
      unwrap(
        await api.GET("/api/jobs", {
          params: {
            query: {
              project_id: filters.projectId ?? undefined,
              state: filters.state ?? undefined,
              mine: filters.mine,
              limit: PAGE_SIZE,
              cursor: pageParam ?? undefined,
            },
          },
        }),
      ),
    initialPageParam: null as string | null,
    getNextPageParam: (last) => last.next_cursor,
    staleTime: 0,
    refetchInterval: (query) =>
      query.state.data?.pages.some((page) => page.items.some(isUnfinished)) ? LIST_REFRESH_MS : false,
  });
}

export function jobQuery(jobId: number) {
  return queryOptions({
    queryKey: keys.job(jobId),
    queryFn: async () => unwrap(await api.GET("/api/jobs/{job_id}", { params: { path: { job_id: jobId } } })),
    staleTime: 0,
    // The stream moves state and progress; a waiting job's place in line changes when
    // jobs ahead of it start, which its own stream does not tell.
    refetchInterval: (query) => (query.state.data?.state === "queued" ? 3000 : false),
  });
}

export type { Job };

/** The project a job belongs to: its name for the page and the caller's role in it. */
export function projectQuery(projectId: number) {
  return queryOptions({
    queryKey: keys.project(projectId),
    queryFn: async () =>
      unwrap(await api.GET("/api/projects/{project_id}", { params: { path: { project_id: projectId } } })),
  });
}

/** Names for the list's project column: the projects the caller can see (first 500). */
export const projectNamesQuery = queryOptions({
  queryKey: ["jobs", "project-names"] as const,
  queryFn: async () => {
    const page = unwrap(await api.GET("/api/projects", { params: { query: { limit: 500 } } }));
    return new Map(page.items.map((p) => [p.id, p.name]));
  },
  staleTime: 60_000,
});
