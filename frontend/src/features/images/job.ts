// Following a job (an import or an export) until it ends: GET /api/jobs/{id} every
// second while it waits or runs. The results' shapes are the server's ImportReport and
// ExportReport (server/datasets/schemas.py); the API types them as free objects.
import { useQuery } from "@tanstack/react-query";
import { api } from "../../api/client";
import { isFinished, type Job } from "../../lib/jobs";
import { unwrap } from "../../api/errors";
import { keys } from "../../api/keys";


export function useJob(jobId: number | null) {
  return useQuery({
    queryKey: keys.job(jobId ?? 0),
    queryFn: async () => unwrap(await api.GET("/api/jobs/{job_id}", { params: { path: { job_id: jobId ?? 0 } } })),
    enabled: jobId !== null,
    refetchInterval: (query) => (isFinished(query.state.data) ? false : 1000),
    refetchIntervalInBackground: true,
    staleTime: 0,
  });
}

export interface ImportIssue {
  file: string;
  line: number | null;
  reason: string;
}

export interface ImportReport {
  format: "yolo" | "coco";
  filename: string;
  classes_added: string[];
  counts: {
    images_created: number;
    images_duplicate: number;
    images_rejected: number;
    images_labelled: number;
    images_kept_existing: number;
    boxes_imported: number;
    labels_skipped: number;
  };
  issues: ImportIssue[];
  issues_total: number;
  issues_truncated: boolean;
}

export interface ExportReport {
  format: "yolo" | "coco";
  images: number;
  boxes: number;
  splits: Record<string, number>;
  missing_files: number[];
  zip_bytes: number;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null;
}

export function importReport(job: Job | undefined): ImportReport | null {
  const result = job?.result;
  return isObject(result) && isObject(result.counts) && Array.isArray(result.issues)
    ? (result as unknown as ImportReport)
    : null;
}

export function exportReport(job: Job | undefined): ExportReport | null {
  const result = job?.result;
  return isObject(result) && typeof result.images === "number" ? (result as unknown as ExportReport) : null;
}
