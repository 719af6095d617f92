// The queue view, live: the server-sent events of /api/admin/queue/events (the whole
// view, then the parts that changed) keep it in the TanStack cache; when the stream cannot be had (a proxy that buffers, an
// error) the same query polls every 2 s instead. GPU history for the sparklines grows
// with every view received.
import { queryOptions, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useRef, useState } from "react";
import { api } from "../../api/client";
import { unwrap } from "../../api/errors";
import { appendHistory, type HistoryMap, type QueueView } from "./queueData";
import { setServerTime } from "./queueClock";

export const queueKey = ["admin", "queue"] as const;
export const POLL_MS = 2000;

export const queueQuery = queryOptions({
  queryKey: queueKey,
  queryFn: async () => unwrap(await api.GET("/api/admin/queue")),
});

export type Feed = "connecting" | "live" | "polling";

/** Marks each applied update for the page's performance figures (bench/ui_queue.py). */
function mark(name: string) {
  if (typeof performance !== "undefined" && typeof performance.mark === "function") performance.mark(name);
}

export function useQueueView(): { query: ReturnType<typeof useQuery<QueueView>>; feed: Feed; history: HistoryMap } {
  const queryClient = useQueryClient();
  const [feed, setFeed] = useState<Feed>("connecting");
  // The history for the view being rendered, derived in the same render as the view:
  // kept in state (an effect after the view) it cost a second render, layout and paint
  // of every worker card per update. The stamp makes the derivation idempotent, so a
  // render that runs twice (StrictMode, an interrupted render) appends once.
  const sparks = useRef<{ stamp: string | null; history: HistoryMap }>({ stamp: null, history: new Map() });
  const lastStamp = useRef<string | null>(null);

  useEffect(() => {
    if (typeof EventSource === "undefined") {
      setFeed("polling");
      return;
    }
    let source: EventSource | null = new EventSource("/api/admin/queue/events");
    let retry: ReturnType<typeof setTimeout> | undefined;
    const open = () => {
      source = new EventSource("/api/admin/queue/events");
      attach(source);
    };
    const attach = (s: EventSource) => {
      s.onopen = () => setFeed("live");
      s.addEventListener("queue", (message) => {
        try {
          // The first event of a stream is the whole view; later ones only its changed parts.
          const part = JSON.parse((message as MessageEvent<string>).data) as Partial<QueueView>;
          queryClient.setQueryData<QueueView>(queueKey, (previous) =>
            previous ? { ...previous, ...part } : (part as QueueView),
          );
          setFeed("live");
        } catch {
          // A torn message: the next one (≤ 2 s) replaces it.
        }
      });
      s.onerror = () => {
        // EventSource retries by itself while it can; meanwhile, and after it gave up,
        // the query polls. A new stream is tried every 10 s.
        setFeed("polling");
        if (s.readyState === EventSource.CLOSED) {
          s.close();
          retry = setTimeout(open, 10_000);
        }
      };
    };
    attach(source);
    return () => {
      clearTimeout(retry);
      source?.close();
      source = null;
    };
  }, [queryClient]);

  const query = useQuery({ ...queueQuery, refetchInterval: feed === "polling" ? POLL_MS : false });

  // History grows once per distinct view, whichever way it came.
  const view = query.data;
  if (view && view.generated_at !== sparks.current.stamp) {
    sparks.current = { stamp: view.generated_at, history: appendHistory(sparks.current.history, view) };
  }
  const history = sparks.current.history;
  useEffect(() => {
    if (!view || view.generated_at === lastStamp.current) return;
    lastStamp.current = view.generated_at;
    setServerTime(view.generated_at);
    mark("queue-update");
  }, [view]);

  return { query, feed, history };
}
