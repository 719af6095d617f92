// Someone else saved this image while this user edited it: what they changed, what this
// user changed, and the three ways out. Nothing is dropped without the user choosing.
import type { EditorBox } from "./boxes";
import { Dialog } from "./Dialog";
import type { Diff, MergeResult } from "./merge";

interface Props {
  merge: MergeResult;
  revision: number;
  classNames: string[];
  onChoose: (choice: "mine" | "theirs" | "merge") => void;
}

function describe(box: EditorBox, classNames: string[]): string {
  const name = classNames[box.class_id] ?? `class ${box.class_id}`;
  const pct = (v: number) => `${Math.round(v * 100)}%`;
  const status = box.status === "accepted" ? "" : ` (${box.status})`;
  return `${name}${status} at ${pct(box.x)}, ${pct(box.y)}, ${pct(box.w)} × ${pct(box.h)}`;
}

function DiffList({ diff, who, classNames }: { diff: Diff; who: string; classNames: string[] }) {
  const items = [
    ...diff.added.map((box) => ({ key: `a${box.id}`, text: `Added ${describe(box, classNames)}` })),
    ...diff.removed.map((box) => ({ key: `r${box.id}`, text: `Removed ${describe(box, classNames)}` })),
    ...diff.changed.map((c) => ({
      key: `c${c.after.id}`,
      text: `Changed ${describe(c.before, classNames)} → ${describe(c.after, classNames)}`,
    })),
  ];
  return (
    <section className="diff" aria-label={who}>
      <h3>
        {who}: {diff.added.length} added, {diff.removed.length} removed, {diff.changed.length}{" "}
        changed
      </h3>
      {items.length > 0 && (
        <ul>
          {items.slice(0, 50).map((item) => (
            <li key={item.key}>{item.text}</li>
          ))}
          {items.length > 50 && <li>… and {items.length - 50} more</li>}
        </ul>
      )}
    </section>
  );
}

export function ConflictDialog({ merge, revision, classNames, onChoose }: Props) {
  return (
    <Dialog title="Someone else saved this image" className="conflict">
      <p>
        While you were editing, another person saved a new version (revision {revision}). Nothing
        has been lost: choose what to keep.
      </p>
      <DiffList diff={merge.theirChanges} who="Their changes" classNames={classNames} />
      <DiffList diff={merge.myChanges} who="Your changes" classNames={classNames} />
      {merge.conflicts.length > 0 && (
        <p className="warning">
          {merge.conflicts.length} box{merge.conflicts.length === 1 ? " was" : "es were"} changed
          by both of you, or changed by one and removed by the other: a merge keeps your version
          of a box you both changed, and keeps a box that one of you changed and the other removed.
        </p>
      )}
      <div className="actions">
        <button type="button" className="primary" onClick={() => onChoose("merge")}>
          Merge both
        </button>
        <button type="button" onClick={() => onChoose("mine")}>
          Keep mine
        </button>
        <button type="button" onClick={() => onChoose("theirs")}>
          Take theirs
        </button>
      </div>
      <p className="muted small">
        Merge both: their boxes with your changes applied. Keep mine: save your version over
        theirs. Take theirs: drop your changes (Ctrl+Z brings them back).
      </p>
    </Dialog>
  );
}
