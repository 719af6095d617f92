// Workers on the queue page: host, pools, draining, heartbeat age (stale ones stand
// out), current jobs, and per GPU two sparklines (utilisation and memory, the last 60
// samples this page received) drawn as plain SVG paths.
import { memo, type RefObject, useEffect, useRef, useState } from "react";
import { Link } from "react-router";
import {
  type GpuHistory,
  gpuKey,
  gpusOf,
  HISTORY,
  type HistoryMap,
  sparkPath,
  type WorkerSummary,
} from "./queueData";
import { Age } from "./queueClock";

const W = 120;
const H = 28;

export function Sparkline({ values, label, current }: { values: readonly number[]; label: string; current: string }) {
  return (
    <span className="spark">
      <span className="spark-chart">
        <svg role="img" aria-label={`${label}: ${current}`} width={W} height={H} viewBox={`0 0 ${W} ${H}`}>
          <path className="spark-line" d={sparkPath(values, W, H, HISTORY)} />
        </svg>
      </span>
      <span className="spark-value" aria-hidden="true">
        <span className="spark-figure">{current}</span>
      </span>
    </span>
  );
}

function HeartbeatAge({ iso, interval }: { iso: string; interval: number }) {
  return <Age since={iso} prefix="heartbeat " suffix=" ago" staleAfter={interval} className="heartbeat" />;
}

/** NVML reports bytes. */
function gib(bytes: number): string {
  return (bytes / 2 ** 30).toFixed(1);
}

function pct(value: number | null): string {
  return value === null ? "unknown" : `${Math.round(value)}%`;
}

/** What the worker found at start: which torch/CUDA build meets which driver. */
function versions(w: WorkerSummary): string {
  return (
    `Oculab ${w.version} · torch ${w.torch_version ?? "not found"} · ` +
    `CUDA ${w.cuda_version ?? "none"} · ` +
    (w.driver_version ? `driver ${w.driver_version}` : "no NVIDIA driver")
  );
}

interface CardProps {
  worker: WorkerSummary;
  histories: (GpuHistory | undefined)[];
  interval: number;
  onDrain: (worker: WorkerSummary, draining: boolean) => void;
  busy: boolean;
}

/** A new view redraws a card only when something it shows changed. */
function sameCard(a: CardProps, b: CardProps): boolean {
  const same = (x: WorkerSummary, y: WorkerSummary) =>
    x === y ||
    (x.hostname === y.hostname &&
      x.last_heartbeat === y.last_heartbeat &&
      x.draining === y.draining &&
      x.slots === y.slots &&
      x.current_jobs.join() === y.current_jobs.join() &&
      x.pools.join() === y.pools.join() &&
      versions(x) === versions(y) &&
      JSON.stringify(x.gpus) === JSON.stringify(y.gpus));
  return (
    a.interval === b.interval &&
    a.busy === b.busy &&
    a.onDrain === b.onDrain &&
    same(a.worker, b.worker) &&
    a.histories.length === b.histories.length &&
    a.histories.every((h, i) => h === b.histories[i])
  );
}

const WorkerCard = memo(function WorkerCard({ worker, histories, interval, onDrain, busy }: CardProps) {
  const gpus = gpusOf(worker);
  return (
    <li
      className={`card worker-card ${worker.draining ? "is-draining" : ""}`}
      aria-label={`Worker ${worker.id} on ${worker.hostname}`}
      data-worker={worker.id}
    >
      <div className="card-head">
        <h3 className="clip" title={worker.id}>
          {worker.hostname} <span className="muted small">{worker.id}</span>
        </h3>
        {worker.draining && <span className="badge">draining</span>}
      </div>
      <p className="small">
        {worker.pools.join(", ")} · {worker.slots} slot{worker.slots === 1 ? "" : "s"} ·{" "}
        <HeartbeatAge iso={worker.last_heartbeat} interval={interval} />
      </p>
      <p className="small muted">{versions(worker)}</p>
      <p className="small">
        {worker.current_jobs.length === 0
          ? "idle"
          : worker.current_jobs.map((id, i) => (
              <span key={id}>
                {i > 0 && ", "}
                <Link to={`/jobs/${id}`}>job #{id}</Link>
              </span>
            ))}
      </p>
      {gpus.length > 0 && (
        <ul className="gpus" aria-label={`GPUs of ${worker.hostname}`}>
          {gpus.map((gpu, i) => {
            const history = histories[i];
            const { utilization, memoryUsed, memoryTotal } = gpu.sample;
            const memory = memoryUsed !== null && memoryTotal ? (100 * memoryUsed) / memoryTotal : null;
            const name = `GPU ${gpu.index} of ${worker.hostname}`;
            return (
              <li key={gpu.index} className="gpu">
                <span className="small clip" title={gpu.name}>
                  GPU {gpu.index} · {gpu.name}
                </span>
                <Sparkline values={history?.utilization ?? []} label={`${name} utilisation`} current={pct(utilization)} />
                <Sparkline
                  values={history?.memory ?? []}
                  label={`${name} memory`}
                  current={memory === null || memoryUsed === null || !memoryTotal ? "unknown" : `${pct(memory)} (${gib(memoryUsed)} of ${gib(memoryTotal)} GiB)`}
                />
              </li>
            );
          })}
        </ul>
      )}
      <button
        type="button"
        className="small"
        disabled={busy}
        onClick={() => onDrain(worker, !worker.draining)}
        aria-label={`${worker.draining ? "Undrain" : "Drain"} worker ${worker.id}`}
      >
        {worker.draining ? "Undrain" : "Drain"}
      </button>
    </li>
  );
}, sameCard);

/** The ids of the cards on screen (or near it), kept by one IntersectionObserver over
 * the grid; null where the browser has none (every card then counts as shown). */
function useCardsOnScreen(grid: RefObject<HTMLUListElement | null>, ids: string): Set<string> | null {
  const [onScreen, setOnScreen] = useState<Set<string> | null>(null);
  useEffect(() => {
    const element = grid.current;
    if (!element || typeof IntersectionObserver === "undefined") return;
    const seen = new Set<string>();
    const observer = new IntersectionObserver(
      (entries) => {
        for (const entry of entries) {
          const id = (entry.target as HTMLElement).dataset.worker;
          if (!id) continue;
          if (entry.isIntersecting) seen.add(id);
          else seen.delete(id);
        }
        setOnScreen(new Set(seen));
      },
      { rootMargin: "200px" },
    );
    for (const card of element.querySelectorAll<HTMLElement>("[data-worker]")) observer.observe(card);
    return () => observer.disconnect();
  }, [grid, ids]);
  return onScreen;
}

export function WorkersPanel({
  workers,
  history,
  interval,
  onDrain,
  pending,
}: {
  workers: WorkerSummary[];
  history: HistoryMap;
  interval: number;
  onDrain: CardProps["onDrain"];
  pending: string | null;
}) {
  const grid = useRef<HTMLUListElement>(null);
  // Observed again whenever the set of workers changes, so a new card is watched too.
  const onScreen = useCardsOnScreen(grid, workers.map((w) => w.id).join(" "));
  // A card scrolled out of view keeps what it last showed, so an update redraws only
  // the cards on screen (50 workers' sparklines each second were most of the page's
  // work); it catches up as soon as it scrolls back.
  const shown = useRef(new Map<string, CardProps>());
  const present = new Set(workers.map((w) => w.id));
  for (const id of shown.current.keys()) if (!present.has(id)) shown.current.delete(id);
  if (workers.length === 0) return <p className="empty">No worker is running. Jobs wait until one starts.</p>;
  return (
    <ul className="worker-grid" ref={grid}>
      {workers.map((worker) => {
        const last = shown.current.get(worker.id);
        const props: CardProps =
          last && onScreen !== null && !onScreen.has(worker.id)
            ? last
            : {
                worker,
                histories: gpusOf(worker).map((gpu) => history.get(gpuKey(worker.id, gpu.index))),
                interval,
                onDrain,
                busy: pending === worker.id,
              };
        shown.current.set(worker.id, props);
        return <WorkerCard key={worker.id} {...props} />;
      })}
    </ul>
  );
}
