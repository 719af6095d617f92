import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { useId, useState } from "react";
import { useNavigate } from "react-router";
import { api } from "../../api/client";
import { errorMessage, unwrap } from "../../api/errors";
import { keys } from "../../api/keys";
import { canManageMembers, type MemberLike, memberActions, NEW_MEMBER_ROLES, ROLES, type Role } from "../../lib/permissions";
import { type Member, membersQuery, type Project, type UserSummary, usersQuery } from "./queries";
import { useDebounced } from "../../lib/useDebounced";

const ROLE_HELP: Record<Role, string> = {
  owner: "edits the project, uploads, manages members",
  annotator: "draws and reviews boxes, exports",
  viewer: "looks only",
};

function personName(p: { username: string; display_name: string | null }): string {
  return p.display_name && p.display_name !== p.username ? `${p.display_name} (${p.username})` : p.username;
}


function AddMember({ projectId, members }: { projectId: number; members: Member[] }) {
  const [q, setQ] = useState("");
  const [role, setRole] = useState<Role>("annotator");
  const search = useDebounced(q.trim(), 250);
  const queryClient = useQueryClient();
  const users = useQuery({ ...usersQuery(search), enabled: search.length > 0 });
  const resultsId = useId();
  const add = useMutation({
    mutationFn: async (user: UserSummary) =>
      unwrap(
        await api.PUT("/api/projects/{project_id}/members/{user_id}", {
          params: { path: { project_id: projectId, user_id: user.id } },
          body: { role },
        }),
      ),
    onSuccess: () => {
      setQ("");
      void queryClient.invalidateQueries({ queryKey: keys.members(projectId) });
    },
  });
  const taken = new Set(members.map((m) => m.user_id));
  const found = (users.data ?? []).filter((u) => !taken.has(u.id));

  return (
    <div className="add-member">
      <h3>Add a member</h3>
      <div className="add-member-row">
        <label className="field grow">
          <span>Find people</span>
          <input
            type="search"
            value={q}
            onChange={(e) => setQ(e.target.value)}
            placeholder="name, username or e-mail"
            aria-controls={resultsId}
            autoComplete="off"
          />
        </label>
        <label className="field">
          <span>Role for new members</span>
          <select value={role} onChange={(e) => setRole(e.target.value as Role)}>
            {NEW_MEMBER_ROLES.map((r) => (
              <option key={r} value={r}>
                {r} — {ROLE_HELP[r]}
              </option>
            ))}
          </select>
        </label>
      </div>
      <div id={resultsId} aria-live="polite">
        {search && users.isPending && <p className="muted">Searching…</p>}
        {users.isError && (
          <p role="alert" className="error">
            {errorMessage(users.error)}
          </p>
        )}
        {search && users.isSuccess && found.length === 0 && (
          <p className="muted">
            {users.data.length > 0 ? "Everyone found is a member already." : `Nobody matches “${search}”.`}
          </p>
        )}
        {found.length > 0 && (
          <ul className="user-results" aria-label="People found">
            {found.map((user) => (
              <li key={user.id}>
                <span>
                  {personName(user)}
                  {user.email && <span className="muted"> · {user.email}</span>}
                </span>
                <button type="button" onClick={() => add.mutate(user)} disabled={add.isPending}>
                  Add {user.username} as {role}
                </button>
              </li>
            ))}
          </ul>
        )}
      </div>
      {add.isError && (
        <p role="alert" className="error">
          Could not add: {errorMessage(add.error)}
        </p>
      )}
    </div>
  );
}

function MemberRow({
  member,
  project,
  me,
  members,
}: {
  member: Member;
  project: Project;
  me: number;
  members: MemberLike[];
}) {
  const queryClient = useQueryClient();
  const navigate = useNavigate();
  const actions = memberActions(project.role, me, member, members);
  const self = member.user_id === me;
  const name = personName(member);
  const refresh = () => queryClient.invalidateQueries({ queryKey: keys.members(project.id) });
  const change = useMutation({
    mutationFn: async (role: Role) =>
      unwrap(
        await api.PUT("/api/projects/{project_id}/members/{user_id}", {
          params: { path: { project_id: project.id, user_id: member.user_id } },
          body: { role },
        }),
      ),
    onSuccess: async () => {
      await refresh();
      // Demoting oneself changes what this page may offer.
      if (self) await queryClient.invalidateQueries({ queryKey: keys.project(project.id), exact: true });
    },
  });
  const remove = useMutation({
    mutationFn: async () =>
      unwrap(
        await api.DELETE("/api/projects/{project_id}/members/{user_id}", {
          params: { path: { project_id: project.id, user_id: member.user_id } },
        }),
      ),
    onSuccess: async () => {
      if (self) {
        queryClient.removeQueries({ queryKey: keys.project(project.id) });
        await queryClient.invalidateQueries({ queryKey: keys.projects });
        void navigate("/projects", { replace: true });
      } else {
        await refresh();
      }
    },
  });
  const error = change.error ?? remove.error;

  return (
    <tr>
      <th scope="row">
        {name}
        {self && <span className="badge">you</span>}
        {member.email && <div className="muted small">{member.email}</div>}
      </th>
      <td>
        {actions.changeRole ? (
          <select
            aria-label={`Role of ${member.username}`}
            value={member.role}
            disabled={change.isPending}
            onChange={(e) => change.mutate(e.target.value as Role)}
          >
            {ROLES.map((r) => (
              <option key={r} value={r}>
                {r}
              </option>
            ))}
          </select>
        ) : (
          <span>{member.role}</span>
        )}
        {actions.note && <div className="muted small">{actions.note}</div>}
      </td>
      <td className="muted">{member.source === "manual" ? "added here" : `from ${member.source}`}</td>
      <td>
        {actions.remove && (
          <button
            type="button"
            className="danger"
            disabled={remove.isPending}
            onClick={() => {
              if (!self || window.confirm(`Leave “${project.name}”? You will lose access to it.`)) remove.mutate();
            }}
          >
            {self ? "Leave project" : `Remove ${member.username}`}
          </button>
        )}
        {error && (
          <p role="alert" className="error">
            {errorMessage(error)}
          </p>
        )}
      </td>
    </tr>
  );
}

/** Who is in the project with which role; owners add, change and remove members. */
export function MembersSection({ project, me }: { project: Project; me: number }) {
  const members = useQuery(membersQuery(project.id));
  const manage = canManageMembers(project.role);
  return (
    <section aria-labelledby="members-heading" className="stack">
      <h2 id="members-heading">Members</h2>
      {members.isPending && <p className="muted">Loading members…</p>}
      {members.isError && (
        <p role="alert" className="error">
          {errorMessage(members.error)}
        </p>
      )}
      {members.data && (
        <table className="members" aria-labelledby="members-heading">
          <thead>
            <tr>
              <th scope="col">Person</th>
              <th scope="col">Role</th>
              <th scope="col">Source</th>
              <th scope="col">
                <span className="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {members.data.map((member) => (
              <MemberRow key={member.user_id} member={member} project={project} me={me} members={members.data} />
            ))}
          </tbody>
        </table>
      )}
      {manage && members.data && <AddMember projectId={project.id} members={members.data} />}
    </section>
  );
}
