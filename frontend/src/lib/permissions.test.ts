import { describe, expect, it } from "vitest";
import {
  allows,
  canAddImages,
  canEditProject,
  canExport,
  canManageMembers,
  type MemberLike,
  memberActions,
} from "./permissions";

const alice: MemberLike = { user_id: 1, role: "owner" };
const bob: MemberLike = { user_id: 2, role: "annotator" };
const carol: MemberLike = { user_id: 3, role: "viewer" };
const dave: MemberLike = { user_id: 4, role: "owner" };

describe("project role rules", () => {
  it("ranks viewer < annotator < owner", () => {
    expect(allows("owner", "annotator")).toBe(true);
    expect(allows("annotator", "annotator")).toBe(true);
    expect(allows("viewer", "annotator")).toBe(false);
    expect(allows(null, "viewer")).toBe(false);
    expect(allows(undefined, "viewer")).toBe(false);
  });

  it("offers settings, members and uploads to owners only", () => {
    for (const check of [canEditProject, canManageMembers, canAddImages]) {
      expect(check("owner")).toBe(true);
      expect(check("annotator")).toBe(false);
      expect(check("viewer")).toBe(false);
    }
  });

  it("lets annotators export but not viewers", () => {
    expect(canExport("owner")).toBe(true);
    expect(canExport("annotator")).toBe(true);
    expect(canExport("viewer")).toBe(false);
  });
});

describe("member actions", () => {
  const team = [alice, bob, carol];

  it("lets an owner change roles and remove other members", () => {
    expect(memberActions("owner", 1, bob, team)).toEqual({ changeRole: true, remove: true, note: null });
    expect(memberActions("owner", 1, carol, team)).toEqual({ changeRole: true, remove: true, note: null });
  });

  it("never demotes or removes the last owner, and says why", () => {
    const actions = memberActions("owner", 1, alice, team);
    expect(actions.changeRole).toBe(false);
    expect(actions.remove).toBe(false);
    expect(actions.note).toMatch(/last owner/);
  });

  it("lets one of two owners leave or be demoted", () => {
    const two = [...team, dave];
    expect(memberActions("owner", 1, alice, two)).toEqual({ changeRole: true, remove: true, note: null });
    expect(memberActions("owner", 1, dave, two).changeRole).toBe(true);
  });

  it("lets annotators and viewers only leave themselves", () => {
    expect(memberActions("annotator", 2, bob, team)).toEqual({ changeRole: false, remove: true, note: null });
    expect(memberActions("annotator", 2, carol, team)).toEqual({ changeRole: false, remove: false, note: null });
    expect(memberActions("viewer", 3, alice, team)).toEqual({ changeRole: false, remove: false, note: null });
    expect(memberActions("viewer", 3, carol, team).remove).toBe(true);
  });
});
