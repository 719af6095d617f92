import { useMutation, useQueryClient } from "@tanstack/react-query";
import { type FormEvent, useState } from "react";
import { api } from "../../api/client";
import { errorMessage, unwrap } from "../../api/errors";
import { keys } from "../../api/keys";
import { ClassListEditor } from "./ClassListEditor";
import { type ClassDraft, classListProblem } from "./classList";
import type { Project } from "./queries";

function sameClasses(a: ClassDraft[], b: ClassDraft[]): boolean {
  return a.length === b.length && a.every((c, i) => c.name.trim() === b[i]?.name && c.color === b[i]?.color);
}

/** Name, description and classes of a project (owners). */
export function ProjectForm({ project }: { project: Project }) {
  const queryClient = useQueryClient();
  const saved: ClassDraft[] = project.classes.map((name, i) => ({ name, color: project.class_colors[i] ?? "#808080" }));
  const [name, setName] = useState(project.name);
  const [description, setDescription] = useState(project.description);
  const [classes, setClasses] = useState<ClassDraft[]>(saved);
  const problem = classListProblem(classes);
  // Boxes refer to classes by number: once any image has boxes, saved classes stay put.
  const labelled = project.images.predicted + project.images.reviewed > 0;
  const dirty =
    name.trim() !== project.name || description !== project.description || !sameClasses(classes, saved);

  const save = useMutation({
    mutationFn: async () =>
      unwrap(
        await api.PATCH("/api/projects/{project_id}", {
          params: { path: { project_id: project.id } },
          body: {
            name: name.trim(),
            description,
            classes: classes.map((c) => c.name.trim()),
            class_colors: classes.map((c) => c.color),
          },
        }),
      ),
    onSuccess: async (updated) => {
      queryClient.setQueryData(keys.project(project.id), { ...project, ...updated });
      setName(updated.name);
      setClasses(updated.classes.map((n, i) => ({ name: n, color: updated.class_colors[i] ?? "#808080" })));
      await queryClient.invalidateQueries({ queryKey: keys.projects });
    },
  });

  const submit = (event: FormEvent) => {
    event.preventDefault();
    if (!problem && dirty) save.mutate();
  };

  return (
    <form onSubmit={submit} className="stack" aria-label="Project details">
      <label className="field">
        <span>Name</span>
        <input name="name" required maxLength={200} value={name} onChange={(e) => setName(e.target.value)} />
      </label>
      <label className="field">
        <span>Description</span>
        <textarea name="description" rows={3} value={description} onChange={(e) => setDescription(e.target.value)} />
      </label>
      <ClassListEditor value={classes} onChange={setClasses} locked={labelled ? saved.length : 0} />
      {save.isError && (
        <p role="alert" className="error">
          Could not save: {errorMessage(save.error)}
        </p>
      )}
      {save.isSuccess && !dirty && (
        <p role="status" className="muted">
          Saved.
        </p>
      )}
      <div className="actions">
        <button type="submit" className="primary" disabled={save.isPending || !dirty || !name.trim() || problem !== null}>
          {save.isPending ? "Saving…" : "Save changes"}
        </button>
        <button
          type="button"
          disabled={!dirty || save.isPending}
          onClick={() => {
            setName(project.name);
            setDescription(project.description);
            setClasses(saved);
            save.reset();
          }}
        >
          Discard changes
        </button>
      </div>
    </form>
  );
}
