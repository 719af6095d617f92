import { type QueryClient, useQueryClient } from "@tanstack/react-query";
import { useEffect, useMemo, useSyncExternalStore } from "react";
import { keys } from "../../../api/keys";
import { UploadQueue } from "./batcher";
import { imageSender } from "./sendImages";
import type { Found } from "./walk";

// Progress reaches the screen at most this often, in an animation frame (none while the
// tab is hidden): enough for progress bars, and the page spends its CPU on sending, not
// on drawing (the server may share the machine). Settling renders at once.
const RENDER_EVERY_MS = 200;

/**
 * The uploads of one project page: drops and picks add to one queue. A small external
 * store, so only the upload panel re-renders as files progress, not the whole page.
 */
export class UploadSession {
  queue: UploadQueue | null = null;
  skipped = 0;
  unreadable: string[] = [];
  private version = 0;
  private listeners = new Set<() => void>();
  private timer: ReturnType<typeof setTimeout> | null = null;
  private frame: number | null = null;
  private wasSettled = true;

  constructor(
    private readonly projectId: number,
    private readonly queryClient: QueryClient,
  ) {}

  readonly subscribe = (listener: () => void) => {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  };

  readonly getVersion = () => this.version;

  start(found: Found, split: string | null): void {
    this.skipped += found.skipped;
    if (found.unreadable.length) this.unreadable = [...this.unreadable, ...found.unreadable];
    if (found.files.length > 0) {
      this.queue ??= new UploadQueue({ send: imageSender(this.projectId), onChange: this.onChange });
      this.queue.add(found.files, split);
    }
    this.emit();
  }

  /** Forgets a finished upload (hides the panel). */
  clear(): void {
    if (this.queue && !this.queue.settled) return;
    this.queue = null;
    this.skipped = 0;
    this.unreadable = [];
    this.emit();
  }

  dispose(): void {
    this.cancelRender();
    this.queue?.cancel();
  }

  private readonly onChange = () => {
    const queue = this.queue;
    if (queue && queue.settled !== this.wasSettled) {
      this.wasSettled = queue.settled;
      if (queue.settled) {
        // Done (also after a retry): new images change the counts and the grid.
        void this.queryClient.invalidateQueries({ queryKey: keys.project(this.projectId) });
        void this.queryClient.invalidateQueries({ queryKey: keys.projects, exact: true });
        this.emit();
        return;
      }
    }
    if (this.timer === null && this.frame === null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.frame = requestAnimationFrame(() => {
          this.frame = null;
          this.emit();
        });
      }, RENDER_EVERY_MS);
    }
  };

  private cancelRender(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.timer = null;
    this.frame = null;
  }

  private emit(): void {
    this.cancelRender();
    this.version += 1;
    for (const listener of this.listeners) listener();
  }
}

/** One session per project page, ended (and its requests aborted) when the page goes. */
export function useUploadSession(projectId: number): UploadSession {
  const queryClient = useQueryClient();
  const session = useMemo(() => new UploadSession(projectId, queryClient), [projectId, queryClient]);
  useEffect(() => () => session.dispose(), [session]);
  return session;
}

/** Re-renders the caller whenever the session changes (throttled); returns a version. */
export function useUploadVersion(session: UploadSession): number {
  return useSyncExternalStore(session.subscribe, session.getVersion);
}
