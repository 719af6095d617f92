// Query keys shared by features, so one feature can invalidate what another shows.
export const keys = {
  me: ["me"] as const,
  authConfig: ["auth-config"] as const,
  projects: ["projects"] as const,
  project: (id: number) => ["projects", id] as const,
  images: (projectId: number, status: string | null, split: string | null = null) =>
    ["projects", projectId, "images", status ?? "all", split ?? "all"] as const,
  members: (projectId: number) => ["projects", projectId, "members"] as const,
  users: (q: string) => ["users", q] as const,
  job: (id: number) => ["jobs", id] as const,
};
