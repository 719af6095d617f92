import { type KeyboardEvent, useId, useState } from "react";
import {
  addClasses,
  type ClassDraft,
  classListProblem,
  moveClass,
  removeClass,
  updateClass,
} from "./classList";

interface Props {
  value: ClassDraft[];
  onChange: (next: ClassDraft[]) => void;
  /**
   * The first `locked` classes may be renamed and recoloured but not moved or removed:
   * boxes refer to classes by number, so a move or a removal would relabel them.
   */
  locked?: number;
}

/** An ordered list of classes, each with a colour: a box's class is its index here. */
export function ClassListEditor({ value, onChange, locked = 0 }: Props) {
  const [draft, setDraft] = useState("");
  const [addError, setAddError] = useState<string | null>(null);
  const hintId = useId();
  const problem = classListProblem(value);

  const add = () => {
    const result = addClasses(value, draft);
    setAddError(result.error);
    if (result.list !== value) onChange(result.list);
    if (!result.error) setDraft("");
  };
  const onKeyDown = (event: KeyboardEvent<HTMLInputElement>) => {
    if (event.key === "Enter") {
      event.preventDefault();
      add();
    }
  };

  return (
    <fieldset className="class-editor">
      <legend>Classes</legend>
      <p className="muted" id={hintId}>
        The order sets each class’s number, its id in YOLO and COCO exports.
        {locked > 0 &&
          " Images are labelled already: existing classes can be renamed and recoloured; new ones go at the end."}
      </p>
      {value.length === 0 ? (
        <p className="muted">No classes yet.</p>
      ) : (
        <ol className="class-list" aria-label="Classes">
          {value.map((item, index) => {
            const label = item.name.trim() || `class ${index + 1}`;
            const fixed = index < locked;
            return (
              // Index keys: rows are edited in place; moves re-render both rows anyway.
              <li key={index} className="class-row">
                <span className="class-index" aria-hidden="true">
                  {index}
                </span>
                <input
                  type="color"
                  aria-label={`Colour of ${label}`}
                  value={item.color}
                  onChange={(e) => onChange(updateClass(value, index, { color: e.target.value }))}
                />
                <input
                  type="text"
                  aria-label={`Name of class ${index}`}
                  value={item.name}
                  maxLength={100}
                  onChange={(e) => onChange(updateClass(value, index, { name: e.target.value }))}
                />
                {fixed ? (
                  <span className="class-locked muted" aria-hidden="true" />
                ) : (
                  <>
                    <button
                      type="button"
                      className="icon"
                      aria-label={`Move ${label} up`}
                      disabled={index === locked}
                      onClick={() => onChange(moveClass(value, index, -1))}
                    >
                      ↑
                    </button>
                    <button
                      type="button"
                      className="icon"
                      aria-label={`Move ${label} down`}
                      disabled={index === value.length - 1}
                      onClick={() => onChange(moveClass(value, index, 1))}
                    >
                      ↓
                    </button>
                    <button
                      type="button"
                      className="icon danger"
                      aria-label={`Remove ${label}`}
                      onClick={() => onChange(removeClass(value, index))}
                    >
                      ×
                    </button>
                  </>
                )}
              </li>
            );
          })}
        </ol>
      )}
      <div className="class-add">
        <input
          type="text"
          aria-label="New class names"
          aria-describedby={hintId}
          placeholder="e.g. car, person, bicycle"
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
          onKeyDown={onKeyDown}
          onPaste={(e) => {
            // A pasted column of names (one per line) becomes that many classes.
            const text = e.clipboardData.getData("text");
            if (text.includes("\n")) {
              e.preventDefault();
              const result = addClasses(value, text);
              setAddError(result.error);
              onChange(result.list);
            }
          }}
        />
        <button type="button" onClick={add}>
          Add class
        </button>
      </div>
      {(addError ?? problem) && (
        <p role="alert" className="error">
          {addError ?? problem}
        </p>
      )}
    </fieldset>
  );
}
