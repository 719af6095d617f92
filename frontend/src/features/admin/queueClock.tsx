// One timer for every ticking age on the queue page. Ages are plain elements that say
// since when they count (<Age since=…>); once a second the timer rewrites the text of
// those whose text changed, without React rendering anything: on a wall screen with a
// thousand jobs and fifty workers the clock costs a few text nodes, not a re-render.
import { useEffect, useLayoutEffect, useRef } from "react";
import { formatAge, isStale } from "./queueData";

// Server clock minus browser clock, from the latest view: ages follow the server.
let skew = 0;
const ages = new Set<HTMLElement>();
let timer: ReturnType<typeof setInterval> | undefined;

export function serverNow(): number {
  return Date.now() + skew;
}

export function setServerTime(iso: string): void {
  const server = Date.parse(iso);
  if (Number.isFinite(server)) {
    skew = server - Date.now();
    tick();
  }
}

export interface AgeFormat {
  prefix?: string;
  suffix?: string;
  /** Heartbeat interval: past two missed beats the element gets the class `stale`. */
  staleAfter?: number;
}

function render(element: HTMLElement, now: number): void {
  const since = Date.parse(element.dataset.since ?? "");
  if (!Number.isFinite(since)) return;
  const seconds = (now - since) / 1000;
  const interval = Number(element.dataset.staleAfter);
  const stale = Number.isFinite(interval) && interval > 0 && isStale(seconds, interval);
  const text = `${element.dataset.prefix ?? ""}${formatAge(seconds)}${element.dataset.suffix ?? ""}${stale ? " (late)" : ""}`;
  if (element.textContent !== text) element.textContent = text;
  if (element.classList.contains("stale") !== stale) element.classList.toggle("stale", stale);
}

export function tick(): void {
  const now = serverNow();
  for (const element of ages) render(element, now);
}

function watch(element: HTMLElement): () => void {
  ages.add(element);
  render(element, serverNow());
  if (timer === undefined) timer = setInterval(tick, 1000);
  return () => {
    ages.delete(element);
    if (ages.size === 0 && timer !== undefined) {
      clearInterval(timer);
      timer = undefined;
    }
  };
}

/** "3 min 5 s" since `since` (ISO), kept current by the page's one timer. */
export function Age({ since, prefix, suffix, staleAfter, className }: AgeFormat & { since: string; className?: string }) {
  const ref = useRef<HTMLSpanElement>(null);
  useEffect(() => {
    const element = ref.current;
    return element ? watch(element) : undefined;
  }, []);
  // A new `since` (a job started, a heartbeat came) shows at once, not at the next tick.
  useLayoutEffect(() => {
    if (ref.current) render(ref.current, serverNow());
  }, [since, prefix, suffix, staleAfter]);
  return (
    <span
      ref={ref}
      className={`age ${className ?? ""}`}
      data-since={since}
      data-prefix={prefix}
      data-suffix={suffix}
      data-stale-after={staleAfter}
    />
  );
}
