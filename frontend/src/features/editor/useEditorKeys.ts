// The editor's keyboard (see shortcuts.ts): one listener on the window, reading the
// store when a key comes, so it never re-binds while the user works.
import { useEffect, useRef } from "react";
import {
  acceptAll,
  copyBoxes,
  nudgeBoxes,
  pasteBoxes,
  removeBoxes,
  review,
  setClass,
} from "./edits";
import { actualSize, fitView, nudgeStep, type Size, zoomAround } from "./geometry";
import { type EditorStore, getClipboard, setClipboard } from "./store";

interface Options {
  store: EditorStore;
  image: Size;
  imageId: number;
  classCount: number;
  readOnly: boolean;
  onNavigate: (which: "previous" | "next" | "next_unreviewed") => void;
  onSaveNow: () => void;
}

const PASTE_OFFSET_PX = 12;

function typing(target: EventTarget | null): boolean {
  return (
    target instanceof HTMLElement &&
    (target.isContentEditable ||
      target.closest("input:not([type=range]):not([type=radio]):not([type=checkbox]), textarea, select") !== null)
  );
}

export function zoomBy(store: EditorStore, factor: number): void {
  const state = store.getState();
  state.setView(zoomAround(state.view, { x: state.viewport.width / 2, y: state.viewport.height / 2 }, factor));
}

export function fit(store: EditorStore, image: Size): void {
  const state = store.getState();
  state.setView(fitView(image, state.viewport));
}

export function oneToOne(store: EditorStore): void {
  const state = store.getState();
  state.setView(actualSize(state.view, state.viewport));
}

export function useEditorKeys(options: Options): void {
  const latest = useRef(options);
  latest.current = options;

  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      const { store, image, imageId, classCount, readOnly, onNavigate, onSaveNow } = latest.current;
      const state = store.getState();
      if (document.querySelector("dialog[open]")) return; // the dialog has the keyboard
      if (typing(event.target) || event.altKey) return;
      const key = event.key;
      const mod = event.ctrlKey || event.metaKey;
      const edit = (next: ReturnType<typeof removeBoxes>, selected?: ReadonlySet<string>) => {
        if (!readOnly) state.commit(next, selected);
      };
      const boxes = state.history.present;
      const done = () => event.preventDefault();

      if (key === "?") return done(), state.setHelp(!state.help);
      if (mod) {
        const lower = key.toLowerCase();
        if (lower === "z" && !readOnly) return done(), event.shiftKey ? state.redo() : state.undo();
        if (lower === "y" && !readOnly) return done(), state.redo();
        if (lower === "a") return done(), state.select(new Set(boxes.map((b) => b.id)));
        if (lower === "s") return done(), onSaveNow();
        if (lower === "c" && state.selected.size) {
          done();
          setClipboard({ imageId, boxes: copyBoxes(boxes, state.selected) });
          return;
        }
        if (lower === "v" && !readOnly) {
          const clip = getClipboard();
          if (!clip) return;
          done();
          const { boxes: next, pasted } = pasteBoxes(
            boxes,
            clip.boxes,
            image,
            clip.imageId === imageId ? PASTE_OFFSET_PX : 0,
          );
          edit(next, pasted);
          return;
        }
        return;
      }
      if (/^[1-9]$/.test(key)) {
        const classId = Number(key) - 1;
        if (classId >= classCount || readOnly) return;
        done();
        state.setClass(classId);
        if (state.selected.size) edit(setClass(boxes, state.selected, classId));
        return;
      }
      const step = nudgeStep(key, event.shiftKey);
      if (step) {
        if (!state.selected.size || readOnly) return;
        done();
        edit(nudgeBoxes(boxes, state.selected, step.x, step.y, image));
        return;
      }
      switch (key) {
        case "Delete":
        case "Backspace":
          if (state.selected.size) {
            done();
            edit(removeBoxes(boxes, state.selected), new Set());
          }
          return;
        case "Escape":
          return state.select(new Set());
        case "0":
          return done(), fit(store, image);
        case "+":
        case "=":
          return done(), zoomBy(store, 1.25);
        case "-":
        case "_":
          return done(), zoomBy(store, 0.8);
      }
      switch (key.toLowerCase()) {
        case "z":
          return done(), oneToOne(store);
        case "b":
          return readOnly ? undefined : (done(), state.setTool("box"));
        case "v":
          return readOnly ? undefined : (done(), state.setTool("select"));
        case "a":
          if (readOnly) return;
          done();
          if (event.shiftKey) edit(acceptAll(boxes, state.threshold));
          else if (state.selected.size) edit(review(boxes, state.selected, "accepted"));
          return;
        case "r":
          if (readOnly || !state.selected.size) return;
          return done(), edit(review(boxes, state.selected, "rejected"));
        case "d":
          return done(), onNavigate("previous");
        case "f":
          return done(), onNavigate("next");
        case "n":
          return done(), onNavigate("next_unreviewed");
      }
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, []);
}
