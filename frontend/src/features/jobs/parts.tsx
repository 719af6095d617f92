// Pieces the job list and the job page share: the state, progress and time of a job.
import { useEffect, useState } from "react";
import {
  formatDuration,
  isUnfinished,
  type Job,
  percent,
  positionText,
  runTime,
  STATE_LABELS,
  waitTime,
} from "./format";

/** The current time, ticking every `ms` while `live`; frozen otherwise (no timer). */
export function useNow(live: boolean, ms = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!live) return;
    setNow(Date.now());
    const timer = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(timer);
  }, [live, ms]);
  return now;
}

export function StateBadge({ job }: { job: Pick<Job, "state"> }) {
  return <span className={`job-state job-state-${job.state}`}>{STATE_LABELS[job.state]}</span>;
}

/** Run time (live while running) or, while waiting, how long it has waited. */
export function Duration({ job }: { job: Job }) {
  const now = useNow(isUnfinished(job));
  const ran = runTime(job, now);
  if (ran !== null) return <span>{formatDuration(ran)}</span>;
  const waited = waitTime(job, now);
  if (waited !== null) return <span className="muted">waiting {formatDuration(waited)}</span>;
  return <span className="muted">—</span>;
}

/** State, progress bar and where it waits, for a job row or the job page's header. */
export function JobStatus({ job, label }: { job: Job; label: string }) {
  const position = positionText(job);
  return (
    <div className="job-status">
      <StateBadge job={job} />
      {job.state === "running" && (
        <span className="job-meter">
          <progress max={100} value={percent(job.progress)} aria-label={label} />
          <span className="muted small">{percent(job.progress)} %</span>
        </span>
      )}
      {position && <span className="job-position">{position}</span>}
    </div>
  );
}
