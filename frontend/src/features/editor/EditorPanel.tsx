// The side panel: tools, zoom, the class palette, the selection, predictions with the
// confidence threshold, undo/redo and the counts. Every control has a name; viewers
// see the legend, the zoom and the counts only.
import { useId } from "react";
import { useStore } from "zustand";
import { isShown } from "./boxes";
import { acceptAll, rejectAll, removeBoxes, review, setClass } from "./edits";
import type { Size } from "./geometry";
import type { EditorStore } from "./store";
import { fit, oneToOne, zoomBy } from "./useEditorKeys";

interface Props {
  store: EditorStore;
  image: Size;
  imageId: number;
  classNames: string[];
  colors: string[];
  readOnly: boolean;
}

function Counts({ store }: { store: EditorStore }) {
  const boxes = useStore(store, (s) => s.history.present);
  const threshold = useStore(store, (s) => s.threshold);
  let predicted = 0;
  let hidden = 0;
  let rejected = 0;
  for (const box of boxes) {
    if (box.status === "predicted") {
      predicted += 1;
      if (!isShown(box, threshold)) hidden += 1;
    } else if (box.status === "rejected") rejected += 1;
  }
  return (
    <p className="muted" aria-live="polite" data-testid="box-counts">
      {boxes.length} box{boxes.length === 1 ? "" : "es"}
      {predicted ? `, ${predicted} predicted` : ""}
      {hidden ? ` (${hidden} below the threshold)` : ""}
      {rejected ? `, ${rejected} rejected` : ""}
    </p>
  );
}

function Zoom({ store, image }: { store: EditorStore; image: Size }) {
  const scale = useStore(store, (s) => s.view.scale);
  return (
    <fieldset className="panel-group">
      <legend>Zoom</legend>
      <div className="row">
        <button type="button" className="icon" aria-label="Zoom out" onClick={() => zoomBy(store, 0.8)}>
          −
        </button>
        <output aria-label="Zoom level">{Math.round(scale * 100)}%</output>
        <button type="button" className="icon" aria-label="Zoom in" onClick={() => zoomBy(store, 1.25)}>
          +
        </button>
        <button type="button" aria-label="Fit image" title="Fit (0)" onClick={() => fit(store, image)}>
          Fit
        </button>
        <button type="button" aria-label="Actual size" title="1:1 (Z)" onClick={() => oneToOne(store)}>
          1:1
        </button>
      </div>
    </fieldset>
  );
}

function Palette({ store, classNames, colors, readOnly }: Omit<Props, "image" | "imageId">) {
  const classId = useStore(store, (s) => s.classId);
  if (readOnly) {
    return (
      <section className="panel-group" aria-label="Classes">
        <h3>Classes</h3>
        <ul className="legend">
          {classNames.map((name, i) => (
            <li key={name}>
              <span className="swatch" style={{ background: colors[i] }} aria-hidden="true" /> {name}
            </li>
          ))}
        </ul>
      </section>
    );
  }
  const choose = (i: number) => {
    const state = store.getState();
    state.setClass(i);
    if (state.selected.size) state.commit(setClass(state.history.present, state.selected, i));
  };
  return (
    <fieldset className="panel-group palette">
      <legend>Class</legend>
      {classNames.map((name, i) => (
        <label key={name} className="palette-item">
          <input type="radio" name="class" checked={classId === i} onChange={() => choose(i)} />
          <span className="swatch" style={{ background: colors[i] }} aria-hidden="true" />
          <span className="visually-hidden">{i < 9 ? `${i + 1} ` : ""}</span>
          <span aria-hidden="true" className="palette-key">
            {i < 9 ? i + 1 : ""}
          </span>
          {name}
        </label>
      ))}
    </fieldset>
  );
}

function Selection({ store, classNames }: { store: EditorStore; classNames: string[] }) {
  const selected = useStore(store, (s) => s.selected);
  const boxes = useStore(store, (s) => s.history.present);
  if (selected.size === 0) return <p className="muted">No box selected. Drag on the image to draw one.</p>;
  const chosen = boxes.filter((b) => selected.has(b.id));
  const one = chosen.length === 1 ? chosen[0] : undefined;
  const state = () => store.getState();
  return (
    <section className="panel-group" aria-label="Selection">
      <h3>
        {selected.size} selected
        {one ? `: ${classNames[one.class_id] ?? one.class_id}` : ""}
      </h3>
      {one && (
        <p className="muted small">
          {one.status}
          {one.confidence !== null ? `, confidence ${one.confidence.toFixed(2)}` : ""}
          {one.source !== "manual" ? `, from ${one.source}` : ""}
        </p>
      )}
      <div className="row wrap">
        <button type="button" onClick={() => state().commit(review(state().history.present, selected, "accepted"))}>
          Accept selected
        </button>
        <button type="button" onClick={() => state().commit(review(state().history.present, selected, "rejected"))}>
          Reject selected
        </button>
        <button type="button" className="danger" onClick={() => state().commit(removeBoxes(state().history.present, selected), new Set())}>
          Delete selected
        </button>
      </div>
    </section>
  );
}

function Predictions({ store }: { store: EditorStore }) {
  const id = useId();
  const threshold = useStore(store, (s) => s.threshold);
  const predicted = useStore(store, (s) => s.history.present.some((b) => b.status === "predicted"));
  const state = () => store.getState();
  return (
    <fieldset className="panel-group">
      <legend>Predictions</legend>
      <div className="field">
        <span>
          <label htmlFor={`${id}-threshold`}>Confidence threshold</label>{" "}
          <output htmlFor={`${id}-threshold`}>{threshold.toFixed(2)}</output>
        </span>
        <input
          id={`${id}-threshold`}
          type="range"
          min={0}
          max={1}
          step={0.01}
          value={threshold}
          onChange={(event) => state().setThreshold(Number(event.target.value))}
        />
      </div>
      <div className="row wrap">
        <button
          type="button"
          disabled={!predicted}
          title="Accept predictions at or above the threshold, reject the rest (Shift+A)"
          onClick={() => state().commit(acceptAll(state().history.present, state().threshold))}
        >
          Accept all
        </button>
        <button type="button" disabled={!predicted} onClick={() => state().commit(rejectAll(state().history.present))}>
          Reject all
        </button>
      </div>
    </fieldset>
  );
}

function Tools({ store }: { store: EditorStore }) {
  const tool = useStore(store, (s) => s.tool);
  const canUndo = useStore(store, (s) => s.history.past.length > 0);
  const canRedo = useStore(store, (s) => s.history.future.length > 0);
  return (
    <div className="panel-group row wrap" role="toolbar" aria-label="Tools">
      <button type="button" aria-pressed={tool === "box"} title="Box tool (B)" onClick={() => store.getState().setTool("box")}>
        Box tool
      </button>
      <button type="button" aria-pressed={tool === "select"} title="Select tool (V)" onClick={() => store.getState().setTool("select")}>
        Select tool
      </button>
      <button type="button" disabled={!canUndo} title="Undo (Ctrl+Z)" onClick={() => store.getState().undo()}>
        Undo
      </button>
      <button type="button" disabled={!canRedo} title="Redo (Ctrl+Shift+Z)" onClick={() => store.getState().redo()}>
        Redo
      </button>
    </div>
  );
}

export function EditorPanel(props: Props) {
  const { store, image, classNames, readOnly } = props;
  return (
    <aside className="editor-panel" aria-label="Editor tools">
      {readOnly && (
        <p className="readonly-note" role="note">
          Read-only: as a viewer you can look at this image and its boxes, not change them.
        </p>
      )}
      {!readOnly && <Tools store={store} />}
      <Zoom store={store} image={image} />
      <Palette {...props} />
      {!readOnly && <Selection store={store} classNames={classNames} />}
      {!readOnly && <Predictions store={store} />}
      <Counts store={store} />
    </aside>
  );
}
