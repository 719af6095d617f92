import { useMutation, useQueryClient } from "@tanstack/react-query";
import { type FormEvent, useState } from "react";
import { Link, useNavigate } from "react-router";
import { api } from "../../api/client";
import { errorMessage, unwrap } from "../../api/errors";
import { keys } from "../../api/keys";
import { useTitle } from "../../components/useTitle";
import { ClassListEditor } from "./ClassListEditor";
import { type ClassDraft, classListProblem } from "./classList";

export function NewProjectPage() {
  useTitle("New project");
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [classes, setClasses] = useState<ClassDraft[]>([]);
  const problem = classListProblem(classes);

  const create = useMutation({
    mutationFn: async () =>
      unwrap(
        await api.POST("/api/projects", {
          body: {
            name: name.trim(),
            description,
            classes: classes.map((c) => c.name.trim()),
            class_colors: classes.map((c) => c.color),
          },
        }),
      ),
    onSuccess: async (project) => {
      await queryClient.invalidateQueries({ queryKey: keys.projects });
      void navigate(`/projects/${project.id}`);
    },
  });

  const submit = (event: FormEvent<HTMLFormElement>) => {
    event.preventDefault();
    if (!problem) create.mutate();
  };

  return (
    <section className="page narrow">
      <h1>New project</h1>
      <form onSubmit={submit} className="stack" aria-label="New project">
        <label className="field">
          <span>Name</span>
          <input
            name="name"
            required
            maxLength={200}
            value={name}
            onChange={(e) => setName(e.target.value)}
            // eslint-disable-next-line jsx-a11y/no-autofocus -- the page is this one form; its first field is where typing starts
            autoFocus
          />
        </label>
        <label className="field">
          <span>Description</span>
          <textarea
            name="description"
            rows={3}
            value={description}
            onChange={(e) => setDescription(e.target.value)}
          />
        </label>
        <ClassListEditor value={classes} onChange={setClasses} />
        {create.isError && (
          <p role="alert" className="error">
            Could not create the project: {errorMessage(create.error)}
          </p>
        )}
        <div className="actions">
          <button
            type="submit"
            className="primary"
            disabled={create.isPending || !name.trim() || problem !== null}
          >
            {create.isPending ? "Creating…" : "Create project"}
          </button>
          <Link to="/projects" className="button">
            Cancel
          </Link>
        </div>
      </form>
    </section>
  );
}
