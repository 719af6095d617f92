// One editor's local state (zustand): the boxes with their undo history, the
// selection, the tool, the class to draw, the view and the threshold. Server state
// stays in TanStack Query and ImageSync; this holds only what the user is doing.
import { createStore, type StoreApi } from "zustand/vanilla";
import { type BoxData, DEFAULT_THRESHOLD, type EditorBox } from "./boxes";
import type { Size, View } from "./geometry";
import { canRedo, canUndo, createHistory, type History, record, redo, undo } from "./history";

export type Tool = "box" | "select";

export interface EditorState {
  history: History<EditorBox[]>;
  selected: ReadonlySet<string>;
  tool: Tool;
  classId: number;
  threshold: number;
  view: View;
  viewport: Size;
  help: boolean;
  /** Sets the boxes as one undo step, and optionally the selection. */
  commit(next: EditorBox[], selected?: ReadonlySet<string>): void;
  undo(): void;
  redo(): void;
  select(ids: ReadonlySet<string>): void;
  setTool(tool: Tool): void;
  setClass(classId: number): void;
  setThreshold(threshold: number): void;
  setView(view: View): void;
  /** The canvas's size, and with `view` the view to show in it, in one update. */
  setViewport(size: Size, view?: View): void;
  setHelp(open: boolean): void;
}

export type EditorStore = StoreApi<EditorState>;

const EMPTY: ReadonlySet<string> = new Set();

/** Keeps only the selected ids that still name a box. */
function prune(selected: ReadonlySet<string>, boxes: EditorBox[]): ReadonlySet<string> {
  if (selected.size === 0) return selected;
  const ids = new Set(boxes.map((box) => box.id));
  const kept = [...selected].filter((id) => ids.has(id));
  return kept.length === selected.size ? selected : new Set(kept);
}

export function createEditorStore(boxes: EditorBox[], threshold = DEFAULT_THRESHOLD): EditorStore {
  return createStore<EditorState>()((set, get) => ({
    history: createHistory(boxes),
    selected: EMPTY,
    tool: "box",
    classId: 0,
    threshold,
    view: { scale: 1, x: 0, y: 0 },
    viewport: { width: 0, height: 0 },
    help: false,
    commit(next, selected) {
      const { history } = get();
      const nextHistory = record(history, next);
      set({
        history: nextHistory,
        selected: prune(selected ?? get().selected, next),
      });
    },
    undo() {
      const { history, selected } = get();
      if (!canUndo(history)) return;
      const next = undo(history);
      set({ history: next, selected: prune(selected, next.present) });
    },
    redo() {
      const { history, selected } = get();
      if (!canRedo(history)) return;
      const next = redo(history);
      set({ history: next, selected: prune(selected, next.present) });
    },
    select(ids) {
      set({ selected: ids.size === 0 ? EMPTY : ids });
    },
    setTool(tool) {
      set({ tool });
    },
    setClass(classId) {
      set({ classId });
    },
    setThreshold(value) {
      set({ threshold: Math.min(1, Math.max(0, value)) });
    },
    setView(view) {
      set({ view });
    },
    setViewport(viewport, view) {
      const old = get().viewport;
      const resized = old.width !== viewport.width || old.height !== viewport.height;
      if (view) set(resized ? { viewport, view } : { view });
      else if (resized) set({ viewport });
    },
    setHelp(help) {
      set({ help });
    },
  }));
}

// Copy/paste works across images within this tab.
let clipboard: { imageId: number; boxes: BoxData[] } | null = null;
export const getClipboard = () => clipboard;
export const setClipboard = (value: { imageId: number; boxes: BoxData[] } | null) => {
  clipboard = value;
};
