import { useMutation, useQueryClient } from "@tanstack/react-query";
import { type FormEvent, useState } from "react";
import { useNavigate } from "react-router";
import { api } from "../../api/client";
import { errorMessage, unwrap } from "../../api/errors";
import { keys } from "../../api/keys";
import { Dialog } from "../../components/Dialog";
import type { Project } from "./queries";

/** Deleting a project, behind a dialog that names it and asks for its name. */
export function DeleteProject({ project }: { project: Project }) {
  const [open, setOpen] = useState(false);
  const [typed, setTyped] = useState("");
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const remove = useMutation({
    mutationFn: async () =>
      unwrap(await api.DELETE("/api/projects/{project_id}", { params: { path: { project_id: project.id } } })),
    onSuccess: () => {
      queryClient.removeQueries({ queryKey: keys.project(project.id) });
      void queryClient.invalidateQueries({ queryKey: keys.projects });
      void navigate("/projects", { replace: true });
    },
  });
  const matches = typed.trim() === project.name;
  const images = project.images.total;

  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (matches) remove.mutate();
  };

  return (
    <section className="danger-zone" aria-labelledby="delete-heading">
      <h2 id="delete-heading">Delete this project</h2>
      <p className="muted">Its images, boxes and memberships are deleted for everyone. This cannot be undone.</p>
      <button type="button" className="danger" onClick={() => setOpen(true)}>
        Delete project…
      </button>
      <Dialog
        open={open}
        onClose={() => {
          setOpen(false);
          setTyped("");
          remove.reset();
        }}
        title={`Delete “${project.name}”?`}
        description={
          <p>
            This deletes the project “{project.name}” with its {images.toLocaleString()} image
            {images === 1 ? "" : "s"}, all their boxes and its member list. It cannot be undone.
          </p>
        }
      >
        <form onSubmit={submit} className="stack">
          <label className="field">
            <span>Type the project’s name to confirm</span>
            <input value={typed} onChange={(e) => setTyped(e.target.value)} autoComplete="off" spellCheck={false} />
          </label>
          {remove.isError && (
            <p role="alert" className="error">
              Could not delete: {errorMessage(remove.error)}
            </p>
          )}
          <div className="actions">
            <button type="submit" className="danger-solid" disabled={!matches || remove.isPending}>
              {remove.isPending ? "Deleting…" : `Delete “${project.name}”`}
            </button>
          </div>
        </form>
      </Dialog>
    </section>
  );
}
