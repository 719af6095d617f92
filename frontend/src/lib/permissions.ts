// What each project role may do, as the server enforces it (docs/SPEC.md §7 "Roles"):
// the UI offers only what the server would allow. Admins get the role `owner` on every
// project from the API, so they need no case of their own here.
import type { Schemas } from "../api/client";

export type Role = Schemas["Role"];
export const ROLES: Role[] = ["owner", "annotator", "viewer"];

const RANK: Record<Role, number> = { viewer: 0, annotator: 1, owner: 2 };

export function allows(role: Role | null | undefined, needed: Role): boolean {
  return role != null && RANK[role] >= RANK[needed];
}

/** Rename, describe, edit classes, delete the project. */
export const canEditProject = (role: Role | null | undefined) => allows(role, "owner");
/** Add members, change roles, remove others. */
export const canManageMembers = (role: Role | null | undefined) => allows(role, "owner");
/** Upload images and import datasets (both add images). */
export const canAddImages = (role: Role | null | undefined) => allows(role, "owner");
/** Export a dataset (a job on the shared CPU pool). */
export const canExport = (role: Role | null | undefined) => allows(role, "annotator");
/** Upload model weights and promote a model to the project's default. */
export const canManageModels = (role: Role | null | undefined) => allows(role, "owner");
/** Run auto-labeling (it writes predicted boxes, like an annotator's edits). */
export const canAutolabel = (role: Role | null | undefined) => allows(role, "annotator");
/** Start a training run (a job in a GPU pool; server/training/endpoints.py). */
export const canTrain = (role: Role | null | undefined) => allows(role, "owner");

export interface MemberLike {
  user_id: number;
  role: Role;
}

export interface MemberActions {
  /** A role picker for this member. */
  changeRole: boolean;
  /** A remove button ("Leave project" when it is the viewer themself). */
  remove: boolean;
  /** Why a control is missing or limited, for the page to say. */
  note: string | null;
}

/**
 * What `viewer` (signed in as `me`, with `role` in the project) may do to `member`,
 * given every member: owners change roles and remove anyone, any member may leave, and
 * the last owner can neither leave nor be demoted (the server answers 409).
 */
export function memberActions(
  role: Role | null | undefined,
  me: number,
  member: MemberLike,
  members: readonly MemberLike[],
): MemberActions {
  const owners = members.filter((m) => m.role === "owner").length;
  const lastOwner = member.role === "owner" && owners <= 1;
  const manage = canManageMembers(role);
  const self = member.user_id === me;
  if (lastOwner) {
    return {
      changeRole: false,
      remove: false,
      note: manage || self ? "The last owner: add another owner first." : null,
    };
  }
  return { changeRole: manage, remove: manage || self, note: null };
}

/** Roles an owner may give a new member, most common first. */
export const NEW_MEMBER_ROLES: Role[] = ["annotator", "viewer", "owner"];

/**
 * Cancel a job (server/jobs/auth.py): an admin; the job's creator while still in its
 * project (or any job of theirs without a project); a project owner.
 */
export function canCancelJob(
  job: { created_by: number | null; project_id: number | null },
  me: { id: number; is_admin: boolean },
  role: Role | null | undefined,
): boolean {
  if (me.is_admin) return true;
  const mine = job.created_by === me.id;
  if (job.project_id === null) return mine;
  return role != null && (mine || role === "owner");
}
