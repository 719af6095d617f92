// One training run: its state and parameters, and its per-epoch curves, first from
// GET /metrics and then live from the job's event stream.
import { type QueryClient, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useCallback, useMemo, useRef } from "react";
import { Link, useParams } from "react-router";
import { errorMessage } from "../../api/errors";
import { keys } from "../../api/keys";
import { ErrorMessage } from "../../components/ErrorMessage";
import { useTitle } from "../../components/useTitle";
import { meQuery } from "../auth/queries";
import { useJobEvents } from "../jobs/useJobEvents";
import { canCancelJob } from "../../lib/permissions";
import { cancelJob, type Job, jobQuery, metricsKey, metricsQuery, projectQuery, runsQuery } from "./api";
import { Chart, type Series } from "./Chart";
import {
  baseLabel,
  baseModelId,
  best,
  CHARTS,
  columns,
  durationSeconds,
  type Epoch,
  epochsDone,
  formatDuration,
  formatValue,
  isFinished,
  isScore,
  METRICS,
  type MetricId,
  mergeEpochs,
  modelOf,
  reportedKeys,
  toEpoch,
  totalEpochs,
} from "./metrics";
import { runName } from "./Overlay";
import "./training.css";

// How many of the latest epochs the table lists (the charts show them all).
const TABLE_EPOCHS = 10;
const SCORE_RANGE: [number, number] = [0, 1];
// One empty list while the metrics load, so the charts' memos keep their values.
const NO_EPOCHS: Epoch[] = [];

const STYLE: Record<MetricId, Omit<Series, "label">> = {
  trainBox: { color: "#2563eb" },
  trainCls: { color: "#dc2626" },
  trainDfl: { color: "#16a34a" },
  valBox: { color: "#2563eb", dash: [6, 4] },
  valCls: { color: "#dc2626", dash: [6, 4] },
  valDfl: { color: "#16a34a", dash: [6, 4] },
  precision: { color: "#9333ea" },
  recall: { color: "#ea580c" },
  map50: { color: "#0891b2" },
  map5095: { color: "#2563eb" },
};

function describe(epochs: Epoch[], ids: MetricId[]): string {
  if (epochs.length === 0) return "No epoch has finished yet.";
  const last = epochs[epochs.length - 1]!;
  const parts = ids.map((id) => {
    const { key, label } = METRICS[id];
    const value = last.values[key];
    const top = isScore(id) ? best(epochs, key) : null;
    return `${label} ${formatValue(value)}${top ? ` (best ${formatValue(top.value)} at epoch ${top.epoch})` : ""}`;
  });
  return `${epochs.length} epochs. At epoch ${last.epoch}: ${parts.join(", ")}.`;
}

function Params({ job, projectId }: { job: Job; projectId: number }) {
  const baseModel = baseModelId(job);
  const param = (name: string) => {
    const value = job.params[name];
    return typeof value === "number" || typeof value === "string" ? String(value) : "—";
  };
  return (
    <dl className="run-params">
      <div>
        <dt>Base</dt>
        <dd>
          {baseModel !== null ? (
            <Link to={`/projects/${projectId}/models/${baseModel}`}>{baseLabel(job)}</Link>
          ) : (
            baseLabel(job)
          )}
        </dd>
      </div>
      <div>
        <dt>Epochs</dt>
        <dd>{param("epochs")}</dd>
      </div>
      <div>
        <dt>Image size</dt>
        <dd>{param("imgsz")}</dd>
      </div>
      <div>
        <dt>Batch</dt>
        <dd>{param("batch") === "-1" ? "auto" : param("batch")}</dd>
      </div>
      <div>
        <dt>Validation fraction</dt>
        <dd>{param("val_fraction")}</dd>
      </div>
      <div>
        <dt>Pool</dt>
        <dd>
          {job.pool}
          {job.worker ? ` on ${job.worker}` : ""}
          {job.gpu !== null ? `, GPU ${job.gpu}` : ""}
        </dd>
      </div>
      <div>
        <dt>Started by</dt>
        <dd>{job.created_by_name ?? "—"}</dd>
      </div>
      <div>
        <dt>Duration</dt>
        <dd>{formatDuration(durationSeconds(job))}</dd>
      </div>
    </dl>
  );
}

function EpochTable({ epochs, ids }: { epochs: Epoch[]; ids: MetricId[] }) {
  const rows = epochs.slice(-TABLE_EPOCHS).reverse();
  return (
    <div className="table-scroller">
      <table className="table compact epochs">
        <caption>
          {epochs.length <= TABLE_EPOCHS ? "Every epoch" : `The last ${TABLE_EPOCHS} of ${epochs.length} epochs`}
        </caption>
        <thead>
          <tr>
            <th scope="col">Epoch</th>
            {ids.map((id) => (
              <th scope="col" key={id} className="num">
                {METRICS[id].label}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((e) => (
            <tr key={e.epoch}>
              <th scope="row">{e.epoch}</th>
              {ids.map((id) => (
                <td key={id} className="num">
                  {formatValue(e.values[METRICS[id].key])}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** The run and its epochs in the cache (the route waits for them: app/router.tsx). Never
 * rejects: a failed GET is the page's to show. */
export function loadRun(queryClient: QueryClient, jobId: number): Promise<unknown> {
  return Promise.all([queryClient.prefetchQuery(jobQuery(jobId)), queryClient.prefetchQuery(metricsQuery(jobId))]);
}

export function RunPage() {
  const params = useParams();
  const projectId = Number(params.projectId);
  const jobId = Number(params.jobId);
  const valid = Number.isSafeInteger(projectId) && projectId > 0 && Number.isSafeInteger(jobId) && jobId > 0;
  const queryClient = useQueryClient();
  const project = useQuery({ ...projectQuery(projectId), enabled: valid });
  const me = useQuery(meQuery);
  const job = useQuery({ ...jobQuery(jobId), enabled: valid });
  const metrics = useQuery({ ...metricsQuery(jobId), enabled: valid });
  const finished = job.data ? isFinished(job.data) : false;
  const belongs = job.data ? job.data.project_id === projectId && job.data.kind === "training.train" : false;
  const onMetrics = useCallback(
    (event: { data: Record<string, unknown> }) => {
      const epoch = toEpoch(event.data);
      if (!epoch) return;
      queryClient.setQueryData<Epoch[]>(metricsKey(jobId), (current) => mergeEpochs(current ?? [], [epoch]));
    },
    [jobId, queryClient],
  );
  // A finished run's epochs are all in GET /metrics: no stream to open.
  const stream = useJobEvents(valid && job.data && belongs && !finished ? jobId : null, { onMetrics });
  const cancel = useMutation({
    mutationFn: () => cancelJob(jobId),
    onSuccess: (updated) => {
      queryClient.setQueryData(keys.job(jobId), updated);
      void queryClient.invalidateQueries({ queryKey: runsQuery(projectId).queryKey });
    },
  });
  useTitle(job.data ? `${runName(job.data)} · Training` : "Training run");

  const epochs = metrics.data ?? NO_EPOCHS;
  const reported = useMemo(() => reportedKeys(epochs), [epochs]);
  const charts = useMemo(
    () =>
      CHARTS.map((chart) => {
        // Before the first epoch every line of the group is named; then those reported.
        const ids = reported.size ? chart.metrics.filter((id) => reported.has(METRICS[id].key)) : chart.metrics;
        return {
          ...chart,
          ids,
          series: ids.map((id) => ({ label: METRICS[id].label, ...STYLE[id] })),
          data: columns(
            epochs,
            ids.map((id) => METRICS[id].key),
          ),
        };
      }),
    [epochs, reported],
  );
  // For bench/ui_run.py: the moment every chart has drawn every epoch.
  const drawn = useRef(new Map<string, number>());
  const marked = useRef(false);
  const onDraw = (id: string, points: number) => {
    drawn.current.set(id, points);
    if (marked.current || epochs.length === 0 || !finished) return;
    if (charts.every((c) => drawn.current.get(c.id) === epochs.length)) {
      marked.current = true;
      performance.mark("oculab:run-curves-drawn");
    }
  };

  if (!valid) return <ErrorMessage error={new Error("There is no training run at this address.")} title="Not found" />;
  if (job.isPending) return <p className="page-status">Loading the run…</p>;
  if (job.isError) return <ErrorMessage error={job.error} />;
  if (!belongs) {
    return <ErrorMessage error={new Error("This job is not a training run of this project.")} title="Not found" />;
  }

  const run = job.data;
  const model = modelOf(run);
  const total = totalEpochs(run);
  const done = epochsDone(run);
  const mayCancel = !finished && me.data !== undefined && canCancelJob(run, me.data, project.data?.role);
  const tableIds = charts.flatMap((c) => c.ids);

  return (
    <section className="page training run">
      <nav aria-label="Breadcrumb" className="crumbs">
        <Link to="/projects">Projects</Link> <span aria-hidden="true">/</span>{" "}
        <Link to={`/projects/${projectId}`}>{project.data?.name ?? "Project"}</Link>{" "}
        <span aria-hidden="true">/</span> <Link to={`/projects/${projectId}/training`}>Training</Link>{" "}
        <span aria-hidden="true">/</span> <span aria-current="page">{runName(run)}</span>
      </nav>
      <div className="page-head">
        <h1>{runName(run)}</h1>
        <span className={`state state-${run.state}`}>{run.state}</span>
        {!finished && (
          <span className="muted small" role="status">
            {stream === "live" ? "Live" : stream === "reconnecting" ? "Reconnecting…" : "Connecting…"}
          </span>
        )}
        {mayCancel && (
          <button type="button" className="danger" onClick={() => cancel.mutate()} disabled={cancel.isPending}>
            {cancel.isPending ? "Canceling…" : "Cancel run"}
          </button>
        )}
      </div>
      {cancel.isError && (
        <p role="alert" className="error">
          Could not cancel: {errorMessage(cancel.error)}
        </p>
      )}
      <div className="job-bar">
        <progress max={1} value={run.progress} aria-label="Training progress" />
        <span>
          {done ?? "—"} / {total ?? "—"} epochs
          {run.state === "queued" && run.position ? ` · ${run.position} in the ${run.pool} queue` : ""}
        </span>
      </div>
      {run.message && <p className="muted">{run.message}</p>}
      {run.error && (
        <p role="alert" className="error">
          {run.error}
        </p>
      )}
      <div className="run-links">
        {model !== null && (
          <Link className="button primary" to={`/projects/${projectId}/models/${model}`}>
            Registered model #{model}
          </Link>
        )}
        <Link className="button" to={`/jobs/${run.id}`}>
          Job page and log
        </Link>
      </div>
      <Params job={run} projectId={projectId} />
      {metrics.isError && (
        <p role="alert" className="error">
          Cannot load the metrics: {errorMessage(metrics.error)}
        </p>
      )}
      <div className="charts">
        {charts.map((chart) => (
          <Chart
            key={chart.id}
            title={chart.title}
            description={describe(epochs, chart.ids)}
            series={chart.series}
            data={chart.data}
            yRange={chart.score ? SCORE_RANGE : undefined}
            onDraw={(points) => onDraw(chart.id, points)}
          />
        ))}
      </div>
      {epochs.length > 0 ? (
        <EpochTable epochs={epochs} ids={tableIds} />
      ) : (
        <p className="muted">{metrics.isPending ? "Loading the metrics…" : "No epoch has finished yet."}</p>
      )}
    </section>
  );
}
