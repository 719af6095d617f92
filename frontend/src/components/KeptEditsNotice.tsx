// The app-wide saver of edits kept in this browser (features/editor/background.ts,
// loaded after the page, not with it) and its notice: edits of images that someone
// else saved meanwhile stay kept, with a link to settle each in the editor.
import { useEffect, useState } from "react";
import { Link } from "react-router";

interface KeptConflict {
  imageId: number;
  projectId: number;
}

type Start = (onConflicts: (conflicts: KeptConflict[]) => void) => () => void;

const loadSaver = async (): Promise<Start> =>
  (await import("../features/editor/background")).startBackgroundSaving;

export function KeptEditsNotice({ load = loadSaver }: { load?: () => Promise<Start> }) {
  const [conflicts, setConflicts] = useState<KeptConflict[]>([]);
  const [hidden, setHidden] = useState(false);
  useEffect(() => {
    let live = true;
    let stop: (() => void) | undefined;
    // After the page has what it needs: opening an image is not slowed down by this.
    const begin = () => {
      load()
        .then((start) => {
          if (!live) return;
          stop = start((next) => {
            setConflicts(next);
            setHidden(false);
          });
        })
        .catch(() => undefined);
    };
    const cancel =
      typeof requestIdleCallback === "function"
        ? ((handle) => () => cancelIdleCallback(handle))(requestIdleCallback(begin, { timeout: 2000 }))
        : ((handle) => () => clearTimeout(handle))(setTimeout(begin, 0));
    return () => {
      live = false;
      cancel();
      stop?.();
    };
  }, [load]);
  if (hidden || conflicts.length === 0) return null;
  return (
    <aside className="kept-edits banner" aria-label="Unsaved edits">
      <p>
        {conflicts.length === 1
          ? "An edit kept in this browser was not saved: someone else changed the image meanwhile."
          : `${conflicts.length} edits kept in this browser were not saved: someone else changed those images meanwhile.`}{" "}
        Open {conflicts.length === 1 ? "it" : "each"} to keep yours, take theirs or merge:
      </p>
      <ul>
        {conflicts.map((c) => (
          <li key={c.imageId}>
            <Link to={`/projects/${c.projectId}/images/${c.imageId}`}>Image {c.imageId}</Link>
          </li>
        ))}
      </ul>
      <button type="button" onClick={() => setHidden(true)}>
        Dismiss
      </button>
    </aside>
  );
}
