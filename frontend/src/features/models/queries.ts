// The registry's server state: a project's models, one model, the project (for the
// caller's role and the promoted model), and a job followed live.
import { queryOptions, useQuery, useQueryClient } from "@tanstack/react-query";
import { useCallback } from "react";
import { api, type Schemas } from "../../api/client";
import { unwrap } from "../../api/errors";
import { keys } from "../../api/keys";
import { isFinished } from "../../lib/jobs";
import { useJobEvents } from "../jobs/useJobEvents";

export type Model = Schemas["ModelRead"];
export type Project = Schemas["ProjectDetail"];

export const modelKeys = {
  list: (projectId: number) => ["projects", projectId, "models"] as const,
  one: (modelId: number) => ["models", modelId] as const,
};

export const projectQuery = (projectId: number) =>
  queryOptions({
    queryKey: keys.project(projectId),
    queryFn: async () =>
      unwrap(await api.GET("/api/projects/{project_id}", { params: { path: { project_id: projectId } } })),
  });

const pending = (models: readonly Model[] | undefined) => models?.some((m) => m.state === "pending") ?? false;

/** A project's models, newest first. While one is being inspected the list refreshes
 * every 2 s, so its state (and the classes it turns out to have) show up by itself. */
export const modelsQuery = (projectId: number) =>
  queryOptions({
    queryKey: modelKeys.list(projectId),
    queryFn: async () =>
      unwrap(await api.GET("/api/models", { params: { query: { project_id: projectId, limit: 500 } } })).items,
    refetchInterval: (query) => (pending(query.state.data) ? 2000 : false),
  });

export const modelQuery = (modelId: number) =>
  queryOptions({
    queryKey: modelKeys.one(modelId),
    queryFn: async () => unwrap(await api.GET("/api/models/{model_id}", { params: { path: { model_id: modelId } } })),
    refetchInterval: (query) => (query.state.data?.state === "pending" ? 2000 : false),
  });

/** A job kept current by its event stream; polled only while the stream is down. */
export function useLiveJob(jobId: number | null) {
  const stream = useJobEvents(jobId);
  return useQuery({
    queryKey: keys.job(jobId ?? 0),
    queryFn: async () => unwrap(await api.GET("/api/jobs/{job_id}", { params: { path: { job_id: jobId ?? 0 } } })),
    enabled: jobId !== null,
    refetchInterval: (query) => (isFinished(query.state.data) || stream === "live" ? false : 2000),
  });
}

/** After a promotion or an upload: the list, the model and the project (its default). */
// Stable across renders, so an effect can depend on it without running on every render.
export function useRefreshModels(projectId: number) {
  const queryClient = useQueryClient();
  return useCallback(
    (modelId?: number) => {
      void queryClient.invalidateQueries({ queryKey: modelKeys.list(projectId) });
      void queryClient.invalidateQueries({ queryKey: keys.project(projectId), exact: true });
      if (modelId !== undefined) void queryClient.invalidateQueries({ queryKey: modelKeys.one(modelId) });
    },
    [queryClient, projectId],
  );
}

export function metricOf(model: Model, name: string): number | null {
  const value = model.metrics[name];
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

export const METRICS = [
  ["mAP50-95", "mAP50-95"],
  ["mAP50", "mAP50"],
  ["precision", "Precision"],
  ["recall", "Recall"],
] as const;

export const STATE_LABELS: Record<Model["state"], string> = {
  pending: "Inspecting…",
  ready: "Ready",
  failed: "Refused",
};
