/**
 * Who is in the room, as the room's presence frames describe it.
 *
 * A member is one `sub`; each of its open connections is one meta
 * `{conn_id, info?}`, and a member is present while it has at least one.
 * The room sends the whole list (`presence_state`, in pages, on every
 * connect), then diffs (`presence`: leaves and joins, keyed by `conn_id`,
 * idempotent), and the counts (`occupancy`). This module turns them into a
 * view and into events about people rather than sockets: a second device
 * of someone already here is an `update`, not a `join`; a reconnect whose
 * new meta replaces the lingering old one in the same diff is an `update`,
 * not a `leave` and a `join`; and a reconnect of this client rebuilds the
 * view from the new state, emitting only what differs from the old one, so
 * the room does not seem to empty and refill.
 *
 * Past its member limit a room only counts (`counts_only`): it no longer
 * says who is here. The view is then frozen (hidden: `members()` is empty)
 * and serves as the base the next full state is compared with, so the
 * join/leave events an application keeps its own list with stay exact
 * across the counts-only spell.
 *
 * Every event fires once the whole frame is applied, so a listener that
 * reads `members()` sees the view the event is about.
 *
 * Kept free of sockets: the client feeds it frames, the tests too.
 *
 * Events (all `CustomEvent`, payload in `detail`):
 * - `state`: `{members, countsOnly}` once the last `presence_state` page came
 * - `join`: `{sub, metas}`, a member appeared; `metas` are its metas
 * - `leave`: `{sub, metas}`, a member's last meta left; `metas` are those that left
 * - `update`: `{sub, joined, left, metas}`, a member that stayed changed its metas
 * - `occupancy`: `{connections, users, members}`, when the counts changed
 * - `countsOnly`: `{countsOnly}`, when the room starts or stops listing members
 *
 * @module
 */

/**
 * @typedef {object} Meta one connection of a member
 * @property {string} conn_id
 * @property {unknown} [info] the `info` claim of that connection's token
 */

/**
 * @typedef {object} Member
 * @property {string} sub
 * @property {Map<string, Meta>} metas by `conn_id`
 */

/**
 * @typedef {object} Occupancy
 * @property {number} connections every open client socket
 * @property {number} users distinct subs among them
 * @property {number} members distinct subs shown as members
 */

export class Presence extends EventTarget {
  /** @type {Map<string, Member>} */
  #members = new Map();
  /**
   * The `presence_state` pages of the current connection so far; `null`
   * when no state is being received.
   * @type {Map<string, Member>|null}
   */
  #incoming = null;
  /** @type {Occupancy|null} */
  #occupancy = null;
  #countsOnly = false;

  /** The members, sorted by `sub`; empty while the room only counts. */
  members() {
    if (this.#countsOnly) return [];
    return [...this.#members.values()].sort(bySub).map(copyMember);
  }

  /** The latest counts, `null` before the first `occupancy` frame. */
  get occupancy() {
    return this.#occupancy && { ...this.#occupancy };
  }

  /** Whether the room is past its member limit and only counts. */
  get countsOnly() {
    return this.#countsOnly;
  }

  /**
   * A new connection: pages of a state the previous one did not finish are
   * dropped; the view stays until the new state replaces it.
   */
  connected() {
    this.#incoming = null;
  }

  /**
   * Takes a `presence_state`, `presence` or `occupancy` frame from the room;
   * ignores any other.
   * @param {{type: string}} frame
   */
  receive(frame) {
    if (frame.type === 'presence_state') this.#page(frame);
    else if (frame.type === 'presence') this.#diff(frame);
    else if (frame.type === 'occupancy') this.#counts(frame);
  }

  #page(frame) {
    this.#incoming ??= new Map();
    for (const member of frame.members ?? []) {
      // A member never spans pages today; merging keeps the view right if one does.
      const known = this.#incoming.get(member.sub) ?? { sub: member.sub, metas: new Map() };
      for (const meta of member.metas) known.metas.set(meta.conn_id, meta);
      if (known.metas.size > 0) this.#incoming.set(member.sub, known);
    }
    if (frame.more) return;
    const fresh = this.#incoming;
    this.#incoming = null;
    const countsOnly = Boolean(frame.counts_only);
    this.#setCountsOnly(countsOnly);
    // A counts-only state lists no one: the last known view stays as the base.
    if (!countsOnly) this.#replace(fresh);
    this.#emit('state', { members: this.members(), countsOnly });
  }

  /** Replaces the view, emitting what differs from the old one. */
  #replace(fresh) {
    const old = this.#members;
    this.#members = fresh;
    const subs = [...new Set([...old.keys(), ...fresh.keys()])].sort();
    for (const sub of subs) this.#changed(sub, old.get(sub)?.metas, fresh.get(sub)?.metas);
  }

  #diff(frame) {
    if (frame.counts_only) {
      this.#setCountsOnly(true);
      return;
    }
    // Diffs resume only after a fresh state; until then the frozen view is the base.
    if (this.#countsOnly) return;
    /** The metas of each member the diff touches, as they were before it. */
    const before = new Map();
    const remember = (sub) => {
      const known = this.#members.get(sub);
      if (!before.has(sub)) before.set(sub, known && new Map(known.metas));
    };
    for (const member of frame.leaves ?? []) {
      remember(member.sub);
      const known = this.#members.get(member.sub);
      if (!known) continue;
      for (const meta of member.metas) known.metas.delete(meta.conn_id);
      if (known.metas.size === 0) this.#members.delete(member.sub);
    }
    for (const member of frame.joins ?? []) {
      remember(member.sub);
      if (member.metas.length === 0) continue;
      const known = this.#members.get(member.sub) ?? { sub: member.sub, metas: new Map() };
      for (const meta of member.metas) known.metas.set(meta.conn_id, meta);
      this.#members.set(member.sub, known);
    }
    for (const [sub, old] of before) this.#changed(sub, old, this.#members.get(sub)?.metas);
  }

  /** Emits the event for one member whose metas went from `old` to `now` (`undefined`: absent). */
  #changed(sub, old, now) {
    if (!old && now) {
      this.#emit('join', { sub, metas: [...now.values()] });
    } else if (old && !now) {
      this.#emit('leave', { sub, metas: [...old.values()] });
    } else if (old && now) {
      const joined = [...now.values()].filter((meta) => !sameMeta(old.get(meta.conn_id), meta));
      const left = [...old.values()].filter((meta) => !now.has(meta.conn_id));
      if (joined.length > 0 || left.length > 0) this.#emit('update', { sub, joined, left, metas: [...now.values()] });
    }
  }

  #counts({ connections, users, members }) {
    const last = this.#occupancy;
    if (last && last.connections === connections && last.users === users && last.members === members) return;
    this.#occupancy = { connections, users, members };
    this.#emit('occupancy', { connections, users, members });
  }

  #setCountsOnly(countsOnly) {
    if (countsOnly === this.#countsOnly) return;
    this.#countsOnly = countsOnly;
    this.#emit('countsOnly', { countsOnly });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

function bySub(a, b) {
  if (a.sub === b.sub) return 0;
  return a.sub < b.sub ? -1 : 1;
}

function copyMember({ sub, metas }) {
  return { sub, metas: new Map(metas) };
}

/** Whether a meta is unchanged: the same `info` (JSON values compare by their text). */
function sameMeta(a, b) {
  return a !== undefined && JSON.stringify(a.info) === JSON.stringify(b.info);
}
