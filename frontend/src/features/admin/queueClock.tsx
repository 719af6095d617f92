// One timer for every ticking age on the queue page. Ages are plain elements that say
// since when they count (<Age since=…>); once a second the timer rewrites the text of
// those whose text changed, without React rendering anything: on a wall screen with a
// thousand jobs and fifty workers the clock costs a few text nodes, not a re-render.
import { useLayoutEffect, useRef } from "react";
import { formatAge, isStale } from "./queueData";

// Server clock minus browser clock, from the latest view: ages follow the server.
let skew = 0;
// What each ticking element shows, parsed once per change of its props: the tick reads
// no DOM (dataset, textContent) and parses no dates, it only compares strings.
interface AgeState {
  since: number;
  prefix: string;
  suffix: string;
  staleAfter: number | undefined;
  text: string | null;
  stale: boolean;
}
const ages = new Map<HTMLElement, AgeState>();
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

function render(element: HTMLElement, state: AgeState, now: number): void {
  if (!Number.isFinite(state.since)) return;
  const seconds = (now - state.since) / 1000;
  const interval = state.staleAfter;
  const stale = interval !== undefined && Number.isFinite(interval) && interval > 0 && isStale(seconds, interval);
  const text = `${state.prefix}${formatAge(seconds)}${state.suffix}${stale ? " (late)" : ""}`;
  if (text !== state.text) {
    state.text = text;
    // Rewriting the one text node's data, not textContent (which replaces the node).
    const node = element.firstChild;
    if (node instanceof Text && !node.nextSibling) node.data = text;
    else element.textContent = text;
  }
  if (stale !== state.stale) {
    state.stale = stale;
    element.classList.toggle("stale", stale);
  }
}

export function tick(): void {
  const now = serverNow();
  for (const [element, state] of ages) render(element, state, now);
}

function watch(element: HTMLElement, format: AgeFormat & { since: string }): () => void {
  const state: AgeState = { since: NaN, prefix: "", suffix: "", staleAfter: undefined, text: null, stale: false };
  ages.set(element, state);
  configure(element, format);
  if (timer === undefined) timer = setInterval(tick, 1000);
  return () => {
    ages.delete(element);
    if (ages.size === 0 && timer !== undefined) {
      clearInterval(timer);
      timer = undefined;
    }
  };
}

/** New props for a watched element: shown at once, not at the next tick. */
function configure(element: HTMLElement, { since, prefix, suffix, staleAfter }: AgeFormat & { since: string }): void {
  const state = ages.get(element);
  if (!state) return;
  state.since = Date.parse(since);
  state.prefix = prefix ?? "";
  state.suffix = suffix ?? "";
  state.staleAfter = staleAfter;
  render(element, state, serverNow());
}

/** "3 min 5 s" since `since` (ISO), kept current by the page's one timer. */
export function Age({ since, prefix, suffix, staleAfter, className }: AgeFormat & { since: string; className?: string }) {
  const ref = useRef<HTMLSpanElement>(null);
  const format = useRef({ since, prefix, suffix, staleAfter });
  format.current = { since, prefix, suffix, staleAfter };
  // Layout effects: the first text is there before the first paint.
  useLayoutEffect(() => {
    const element = ref.current;
    return element ? watch(element, format.current) : undefined;
  }, []);
  // A new `since` (a job started, a heartbeat came) shows at once, not at the next tick.
  useLayoutEffect(() => {
    if (ref.current) configure(ref.current, { since, prefix, suffix, staleAfter });
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
