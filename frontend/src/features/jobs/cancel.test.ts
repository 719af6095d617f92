import { describe, expect, it } from "vitest";
import { canCancelJob } from "../../lib/permissions";

describe("who may cancel a job (as server/jobs/auth.py decides)", () => {
  const alice = { id: 2, is_admin: false };
  const admin = { id: 1, is_admin: true };
  const hers = { created_by: 2, project_id: 7 };
  const bobs = { created_by: 3, project_id: 7 };

  it("lets the creator cancel while a member, and owners cancel anyone's", () => {
    expect(canCancelJob(hers, alice, "viewer")).toBe(true);
    expect(canCancelJob(bobs, alice, "owner")).toBe(true);
    expect(canCancelJob(bobs, alice, "annotator")).toBe(false);
    // Removed from the project: the job is not even visible to her any more.
    expect(canCancelJob(hers, alice, null)).toBe(false);
  });
  it("leaves a job without a project to its creator and the admins", () => {
    expect(canCancelJob({ created_by: 2, project_id: null }, alice, null)).toBe(true);
    expect(canCancelJob({ created_by: 3, project_id: null }, alice, null)).toBe(false);
    expect(canCancelJob({ created_by: 3, project_id: null }, admin, null)).toBe(true);
    expect(canCancelJob(bobs, admin, null)).toBe(true);
  });
});
