// What every page that starts a job says about it (import, export, upload inspection,
// auto-label): the API's job record, whether it has ended, and its state in words.
import type { Schemas } from "../api/client";

export type Job = Schemas["JobRead"];

export const isFinished = (job: Job | undefined) =>
  job !== undefined && (job.state === "succeeded" || job.state === "failed" || job.state === "canceled");

/** "Waiting for a worker (number 2 in line)", "Running: importing images", "Done", ... */
export function jobStatusText(job: Job): string {
  switch (job.state) {
    case "queued":
      return job.position && job.position > 0 ? `Waiting for a worker (number ${job.position} in line)` : "Starting…";
    case "running":
      return `Running${job.message ? `: ${job.message}` : "…"}`;
    case "succeeded":
      return "Done";
    case "failed":
      return `Failed: ${job.error ?? job.message ?? "unknown error"}`;
    case "canceled":
      return "Canceled";
    default:
      return job.state;
  }
}
