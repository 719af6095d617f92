import { infiniteQueryOptions, queryOptions } from "@tanstack/react-query";
import { api, type Schemas } from "../../api/client";
import { unwrap } from "../../api/errors";
import { keys } from "../../api/keys";

export type ProjectSummary = Schemas["ProjectDetail"];
export const PROJECTS_PAGE = 50;

export const projectsQuery = infiniteQueryOptions({
  queryKey: keys.projects,
  queryFn: async ({ pageParam }) =>
    unwrap(
      await api.GET("/api/projects", {
        params: { query: { limit: PROJECTS_PAGE, cursor: pageParam ?? undefined } },
      }),
    ),
  initialPageParam: null as string | null,
  getNextPageParam: (last) => last.next_cursor ?? undefined,
});

export type Project = Schemas["ProjectDetail"];
export type Member = Schemas["MemberRead"];
export type UserSummary = Schemas["UserSummary"];

export const projectQuery = (projectId: number) =>
  queryOptions({
    queryKey: keys.project(projectId),
    queryFn: async () =>
      unwrap(await api.GET("/api/projects/{project_id}", { params: { path: { project_id: projectId } } })),
  });

export const membersQuery = (projectId: number) =>
  queryOptions({
    queryKey: keys.members(projectId),
    queryFn: async () =>
      unwrap(await api.GET("/api/projects/{project_id}/members", { params: { path: { project_id: projectId } } })),
  });

export const usersQuery = (q: string) =>
  queryOptions({
    queryKey: keys.users(q),
    queryFn: async () => unwrap(await api.GET("/api/users", { params: { query: { q, limit: 10 } } })),
    staleTime: 30_000,
  });

/** The signed-in user (the same cache entry as the sign-in flow's). */
export const meQuery = queryOptions({
  queryKey: keys.me,
  queryFn: async () => unwrap(await api.GET("/api/me")),
  staleTime: 60_000,
});
