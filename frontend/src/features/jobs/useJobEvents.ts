// A job's server-sent events (GET /api/jobs/{id}/events): the job in the query cache
// follows its `snapshot`, `state` and `progress` events, and the caller gets every
// `log` and `metrics` event. The browser's EventSource reconnects by itself after a
// dropped connection and sends Last-Event-ID, so nothing is missed or repeated; when
// the server refuses it outright (EventSource then gives up), a new stream resumes
// with `?after=` the last event seen.
import { useQueryClient } from "@tanstack/react-query";
import { useEffect, useRef, useState } from "react";
import { keys } from "../../api/keys";
import type { Schemas } from "../../api/client";

type Job = Schemas["JobRead"];

export interface JobStreamEvent {
  id: number;
  kind: "log" | "metrics";
  data: Record<string, unknown>;
}

export interface JobEventHandlers {
  onLog?: (event: JobStreamEvent) => void;
  onMetrics?: (event: JobStreamEvent) => void;
}

export type StreamState = "connecting" | "live" | "reconnecting" | "ended";

const RETRY_MS = [1000, 2000, 5000, 10000];

export function useJobEvents(jobId: number | null, handlers: JobEventHandlers = {}): StreamState {
  const queryClient = useQueryClient();
  const [state, setState] = useState<StreamState>("connecting");
  // The latest handlers without restarting the stream when the caller re-renders.
  const latest = useRef(handlers);
  latest.current = handlers;

  useEffect(() => {
    if (jobId === null) return;
    let source: EventSource | null = null;
    let lastId = 0;
    let ended = false;
    let failures = 0;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const key = keys.job(jobId);
    const patch = (values: Partial<Job>) =>
      queryClient.setQueryData<Job>(key, (job) => (job ? { ...job, ...values } : job));
    const parse = (message: MessageEvent<string>): Record<string, unknown> => {
      if (message.lastEventId) lastId = Math.max(lastId, Number(message.lastEventId) || 0);
      try {
        const value: unknown = JSON.parse(message.data);
        return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
      } catch {
        return {};
      }
    };

    const open = () => {
      setState(failures === 0 ? "connecting" : "reconnecting");
      source = new EventSource(`/api/jobs/${jobId}/events${lastId ? `?after=${lastId}` : ""}`);
      source.onopen = () => {
        failures = 0;
        setState("live");
      };
      source.addEventListener("snapshot", (m) => {
        queryClient.setQueryData<Job>(key, parse(m as MessageEvent<string>) as unknown as Job);
      });
      source.addEventListener("progress", (m) => {
        const data = parse(m as MessageEvent<string>);
        patch({
          progress: typeof data.progress === "number" ? data.progress : undefined,
          ...(typeof data.message === "string" ? { message: data.message } : {}),
        });
      });
      source.addEventListener("state", (m) => {
        parse(m as MessageEvent<string>);
        // A state change carries little: the job's record has the rest (worker, result).
        void queryClient.invalidateQueries({ queryKey: key, exact: true });
      });
      for (const kind of ["log", "metrics"] as const) {
        source.addEventListener(kind, (m) => {
          const message = m as MessageEvent<string>;
          const data = parse(message);
          const event = { id: Number(message.lastEventId) || 0, kind, data };
          if (kind === "log") latest.current.onLog?.(event);
          else latest.current.onMetrics?.(event);
        });
      }
      source.addEventListener("end", () => {
        ended = true;
        source?.close();
        setState("ended");
        void queryClient.invalidateQueries({ queryKey: key, exact: true });
      });
      source.onerror = () => {
        if (ended || !source) return;
        if (source.readyState === EventSource.CLOSED) {
          // Refused (an HTTP error): try again later from the last event seen.
          source.close();
          const delay = RETRY_MS[Math.min(failures, RETRY_MS.length - 1)];
          failures += 1;
          setState("reconnecting");
          timer = setTimeout(open, delay);
        } else {
          setState("reconnecting");
        }
      };
    };
    open();
    return () => {
      ended = true;
      clearTimeout(timer);
      source?.close();
    };
  }, [jobId, queryClient]);

  return state;
}
