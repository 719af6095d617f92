// Several runs of a project on one chart, one metric at a time.
import { useQueries } from "@tanstack/react-query";
import { useId, useMemo } from "react";
import { type Job, metricsQuery } from "./api";
import { Chart, PALETTE } from "./Chart";
import { best, type Epoch, isFinished, isScore, METRICS, type MetricId, OVERLAY_METRICS, overlayColumns } from "./metrics";

const SCORE_RANGE: [number, number] = [0, 1];

interface Props {
  runs: Job[];
  metric: MetricId;
  onMetric: (metric: MetricId) => void;
  /** After each draw: how many runs are drawn and how many epochs the x axis holds. */
  onDraw?: (runs: number, points: number) => void;
}

export function runName(job: Job): string {
  const name = job.params.name;
  return typeof name === "string" && name ? `#${job.id} ${name}` : `Run #${job.id}`;
}

export function Overlay({ runs, metric, onMetric, onDraw }: Props) {
  const selectId = useId();
  const results = useQueries({
    queries: runs.map((run) => ({
      ...metricsQuery(run.id),
      // A run still training gains epochs; the run page streams them, here a poll will do.
      refetchInterval: isFinished(run) ? (false as const) : 5000,
    })),
  });
  const epochs = results.map((r) => r.data);
  const loaded = epochs.filter((e): e is Epoch[] => e !== undefined);
  const { key, label } = METRICS[metric];
  // Recomputed only when a run's epochs change, not on every render of the page.
  const version = results.map((r) => r.dataUpdatedAt).join(",");
  // eslint-disable-next-line react-hooks/exhaustive-deps -- version stands for loaded, a new array each render
  const data = useMemo(() => overlayColumns(loaded, key), [key, version]);
  const drawnRuns = loaded.length;
  // A run keeps its colour while others load or are added.
  const series = runs.flatMap((run, i) =>
    epochs[i] === undefined ? [] : [{ label: runName(run), color: PALETTE[i % PALETTE.length]! }],
  );
  const summary = runs
    .map((run, i) => {
      const e = epochs[i];
      if (!e) return `${runName(run)}: loading`;
      const top = best(e, key);
      return top ? `${runName(run)}: best ${top.value.toFixed(3)} at epoch ${top.epoch}` : `${runName(run)}: no epochs yet`;
    })
    .join("; ");
  const failed = results.find((r) => r.isError);

  return (
    <section className="overlay card" aria-labelledby={`${selectId}-title`}>
      <div className="card-head">
        <h2 id={`${selectId}-title`}>Compare runs</h2>
        <label className="inline-field">
          <span>Metric</span>
          <select value={metric} onChange={(e) => onMetric(e.target.value as MetricId)}>
            {OVERLAY_METRICS.map((id) => (
              <option key={id} value={id}>
                {METRICS[id].label}
              </option>
            ))}
          </select>
        </label>
      </div>
      {runs.length === 0 ? (
        <p className="muted">Tick runs in the table to draw them here on one chart.</p>
      ) : (
        <Chart
          title={`${label} of ${runs.length === 1 ? "one run" : `${runs.length} runs`}`}
          description={summary}
          series={series}
          data={data}
          height={280}
          yRange={isScore(metric) ? SCORE_RANGE : undefined}
          onDraw={(points) => onDraw?.(drawnRuns, points)}
        />
      )}
      {failed && (
        <p role="alert" className="error">
          Some runs' metrics could not be loaded.
        </p>
      )}
    </section>
  );
}
