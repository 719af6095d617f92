// A project's training runs: state, progress, epochs, best mAP50-95, duration and the
// model each registered; the Train dialog; several runs overlaid on one chart.
import { useQuery } from "@tanstack/react-query";
import { useCallback, useEffect, useRef, useState } from "react";
import { Link, useParams, useSearchParams } from "react-router";
import { fetchEarly } from "../../api/prefetch";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { canTrain } from "../../lib/permissions";
import { type Job, projectQuery, runsQuery } from "./api";
import {
  baseLabel,
  durationSeconds,
  epochsDone,
  formatDuration,
  formatValue,
  isFinished,
  isMetricId,
  type MetricId,
  modelOf,
  resultMetric,
  totalEpochs,
} from "./metrics";
import { Overlay, runName } from "./Overlay";
import { TrainDialog } from "./TrainDialog";
import "./training.css";

// The overlay's most runs at once: past that the lines are unreadable.
const MAX_COMPARED = 10;

function parseIds(text: string | null): number[] {
  if (!text) return [];
  const ids = text.split(",").map(Number);
  return [...new Set(ids.filter((id) => Number.isSafeInteger(id) && id > 0))].slice(0, MAX_COMPARED);
}

/** A run's record and epochs, started as the pointer or focus reaches its link: the run
 * page's loader asks for the same paths and takes these (api/prefetch.ts). */
function warmRun(jobId: number): void {
  fetchEarly(`/api/jobs/${jobId}`);
  fetchEarly(`/api/jobs/${jobId}/metrics`);
}

function RunRow({ job, projectId, compared, onCompare }: { job: Job; projectId: number; compared: boolean; onCompare: (on: boolean) => void }) {
  const total = totalEpochs(job);
  const done = epochsDone(job);
  const model = modelOf(job);
  const map = resultMetric(job, "mAP50-95");
  const name = runName(job);
  return (
    <tr>
      <td>
        <input
          type="checkbox"
          checked={compared}
          onChange={(e) => onCompare(e.target.checked)}
          aria-label={`Compare ${name}`}
        />
      </td>
      <th scope="row">
        <Link
          to={`/projects/${projectId}/training/${job.id}`}
          onPointerEnter={() => warmRun(job.id)}
          onFocus={() => warmRun(job.id)}
        >
          {name}
        </Link>
      </th>
      <td>{baseLabel(job)}</td>
      <td>
        <span className={`state state-${job.state}`}>{job.state}</span>
      </td>
      <td>
        <progress max={1} value={job.progress} aria-label={`Progress of ${name}`} />
      </td>
      <td className="num">
        {done ?? "—"} / {total ?? "—"}
      </td>
      <td className="num">{formatValue(map)}</td>
      <td className="num">{formatDuration(durationSeconds(job))}</td>
      <td>{model !== null ? <Link to={`/projects/${projectId}/models/${model}`}>Model #{model}</Link> : "—"}</td>
    </tr>
  );
}

export function TrainingPage() {
  const projectId = Number(useParams().projectId);
  const valid = Number.isSafeInteger(projectId) && projectId > 0;
  const project = useQuery({ ...projectQuery(projectId), enabled: valid });
  const runs = useQuery({
    ...runsQuery(projectId),
    enabled: valid,
    // Progress of waiting and running runs, without a stream per row.
    refetchInterval: (query) => (query.state.data?.some((job) => !isFinished(job)) ? 3000 : false),
  });
  const [params, setParams] = useSearchParams();
  const [dialog, setDialog] = useState(false);
  useTitle(project.data ? `Training · ${project.data.name}` : "Training");
  const compared = parseIds(params.get("compare"));
  const rawMetric = params.get("metric");
  const metric: MetricId = isMetricId(rawMetric) ? rawMetric : "map5095";
  const marked = useRef(false);
  // The compared runs' epochs start with the runs list, not once it has come back and the
  // overlay mounts (its queries take these: api/prefetch.ts).
  const [early] = useState(() => compared);
  useEffect(() => {
    for (const id of early.slice(0, 6)) fetchEarly(`/api/jobs/${id}/metrics`);
  }, [early]);
  const listed = (runs.data?.length ?? 0) > 0;
  // The run page's code (uPlot comes with this page's), loaded once there are runs to
  // open, so that a click waits only for the run's data.
  useEffect(() => {
    if (listed) void import("./RunPage");
  }, [listed]);
  // For bench/ui_run.py: when every compared run is drawn.
  const onDraw = useCallback(
    (drawn: number, points: number) => {
      if (!marked.current && drawn === compared.length && points > 0) {
        marked.current = true;
        performance.mark("oculab:overlay-drawn");
      }
    },
    [compared.length],
  );

  if (!valid) return <ErrorMessage error={new Error("There is no project at this address.")} title="Not found" />;
  if (project.isPending) return <p className="page-status">Loading project…</p>;
  if (project.isError) return <ErrorMessage error={project.error} />;

  const update = (next: { compare?: number[]; metric?: MetricId }) => {
    const values = new URLSearchParams(params);
    if (next.compare) {
      if (next.compare.length) values.set("compare", next.compare.join(","));
      else values.delete("compare");
    }
    if (next.metric) values.set("metric", next.metric);
    setParams(values, { replace: true });
  };
  const toggle = (id: number, on: boolean) =>
    update({ compare: on ? [...compared, id].slice(-MAX_COMPARED) : compared.filter((c) => c !== id) });
  const items = runs.data ?? [];
  const byId = new Map(items.map((job) => [job.id, job]));
  const comparedRuns = compared.flatMap((id) => {
    const job = byId.get(id);
    return job ? [job] : [];
  });
  const mayTrain = canTrain(project.data.role);

  return (
    <section className="page training">
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link to="/projects">Projects</Link> <span aria-hidden="true">/</span>{" "}
        <Link to={`/projects/${projectId}`}>{project.data.name}</Link> <span aria-hidden="true">/</span>{" "}
        <span aria-current="page">Training</span>
      </nav>
      <div className="page-head">
        <h1>Training runs</h1>
        {mayTrain && (
          <button type="button" className="primary" onClick={() => setDialog(true)}>
            Train a model
          </button>
        )}
      </div>
      {runs.isError && <ErrorMessage error={runs.error} title="Cannot list the runs" />}
      {runs.isPending && <p className="page-status">Loading runs…</p>}
      {runs.data && items.length === 0 && (
        <p className="empty">
          No training runs yet.{" "}
          {mayTrain ? "Review some images, then train a model on them." : "A project owner can start one."}
        </p>
      )}
      {items.length > 0 && (
        <div className="table-scroller">
          <table className="table runs">
            <caption className="visually-hidden">Training runs of {project.data.name}</caption>
            <thead>
              <tr>
                <th scope="col">
                  <span className="visually-hidden">Compare</span>
                </th>
                <th scope="col">Run</th>
                <th scope="col">Base</th>
                <th scope="col">State</th>
                <th scope="col">Progress</th>
                <th scope="col" className="num">
                  Epochs
                </th>
                <th scope="col" className="num">
                  Best mAP50-95
                </th>
                <th scope="col" className="num">
                  Duration
                </th>
                <th scope="col">Model</th>
              </tr>
            </thead>
            <tbody>
              {items.map((job) => (
                <RunRow
                  key={job.id}
                  job={job}
                  projectId={projectId}
                  compared={compared.includes(job.id)}
                  onCompare={(on) => toggle(job.id, on)}
                />
              ))}
            </tbody>
          </table>
        </div>
      )}
      {items.length > 0 && (
        <Overlay runs={comparedRuns} metric={metric} onMetric={(m) => update({ metric: m })} onDraw={onDraw} />
      )}
      {mayTrain && <TrainDialog projectId={projectId} open={dialog} onClose={() => setDialog(false)} />}
    </section>
  );
}
