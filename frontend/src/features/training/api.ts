// Training's server state: the project, its runs (training jobs), a run's metrics, the
// preview of what a run would learn from, and the project's registered models.
import { queryOptions } from "@tanstack/react-query";
import { api, type Schemas } from "../../api/client";
import { unwrap } from "../../api/errors";
import { keys } from "../../api/keys";
import { takeEarly } from "../../api/prefetch";
import { type Epoch, epochsFromEvents, mergeEpochs, TRAINING_KIND } from "./metrics";

export type Job = Schemas["JobRead"];
export type TrainingData = Schemas["TrainingData"];
export type TrainRequest = Schemas["TrainRequest"];

// Enough for a project's runs on one page; older ones are rarely compared.
export const RUNS_LIMIT = 100;

export const projectQuery = (projectId: number) =>
  queryOptions({
    queryKey: keys.project(projectId),
    queryFn: async () =>
      unwrap(await api.GET("/api/projects/{project_id}", { params: { path: { project_id: projectId } } })),
  });

export const runsQuery = (projectId: number) =>
  queryOptions({
    queryKey: ["projects", projectId, "training-runs"] as const,
    queryFn: async () =>
      unwrap(
        await api.GET("/api/jobs", {
          params: { query: { project_id: projectId, kind: TRAINING_KIND, limit: RUNS_LIMIT } },
        }),
      ).items,
  });

// The run page's route starts these two GETs while its code loads (app/router.tsx).
export const jobQuery = (jobId: number) =>
  queryOptions({
    queryKey: keys.job(jobId),
    queryFn: async () =>
      (await takeEarly<Job>(`/api/jobs/${jobId}`)) ??
      unwrap(await api.GET("/api/jobs/{job_id}", { params: { path: { job_id: jobId } } })),
  });

export const metricsKey = (jobId: number) => ["jobs", jobId, "metrics"] as const;

/**
 * A run's epochs so far. The live page adds streamed epochs to this cache entry; a fetch
 * answered before a streamed epoch landed must not drop it, so the two are merged.
 */
export const metricsQuery = (jobId: number) =>
  queryOptions({
    queryKey: metricsKey(jobId),
    queryFn: async ({ client }): Promise<Epoch[]> => {
      const events =
        (await takeEarly<Schemas["JobEventRead"][]>(`/api/jobs/${jobId}/metrics`)) ??
        unwrap(await api.GET("/api/jobs/{job_id}/metrics", { params: { path: { job_id: jobId } } }));
      const fetched = epochsFromEvents(events);
      return mergeEpochs(fetched, client.getQueryData<Epoch[]>(metricsKey(jobId)) ?? []);
    },
  });

export interface SplitParams {
  val_fraction: number;
  seed: number;
}

export const trainingDataQuery = (projectId: number, split: SplitParams) =>
  queryOptions({
    queryKey: ["projects", projectId, "training-data", split.val_fraction, split.seed] as const,
    queryFn: async () =>
      unwrap(
        await api.GET("/api/projects/{project_id}/training-data", {
          params: { path: { project_id: projectId }, query: split },
        }),
      ),
  });

export const modelsQuery = (projectId: number) =>
  queryOptions({
    queryKey: ["projects", projectId, "models"] as const,
    queryFn: async () =>
      unwrap(await api.GET("/api/models", { params: { query: { project_id: projectId, limit: 100 } } })).items,
  });

export async function startTraining(projectId: number, body: TrainRequest): Promise<Job> {
  return unwrap(
    await api.POST("/api/projects/{project_id}/jobs/train", {
      params: { path: { project_id: projectId } },
      body,
    }),
  );
}

export async function cancelJob(jobId: number): Promise<Job> {
  return unwrap(await api.POST("/api/jobs/{job_id}/cancel", { params: { path: { job_id: jobId } } }));
}
