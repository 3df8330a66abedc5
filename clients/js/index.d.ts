// Type declarations of @roomcast/client (src/index.js), written by hand
// beside the JavaScript: the package ships no build step. Events are typed
// through an event map per class, so `addEventListener('message', e => …)`
// knows `e.detail`. `tsc -p clients/js` checks them against the examples.

/** A connection's state. */
export type State = 'connecting' | 'open' | 'reconnecting' | 'closed';

// ---------------------------------------------------------------- frames

/** A stored room message. */
export interface Message<T = unknown> {
  room: string;
  /** The publisher's idempotency key, or a server UUIDv7. */
  id: string;
  /** 1, 2, 3… per room and epoch. */
  seq: number;
  /** Milliseconds since the Unix epoch when stored. */
  ts: number;
  /** The publisher's `sub`. */
  sender: string;
  origin: 'ws' | 'http' | 'kafka' | (string & {});
  data: T;
  /** Only when the publisher sent one. */
  trace?: string;
}

/** A publish was stored (or was a duplicate of one stored earlier). */
export interface Ack {
  /** On a multiplexed connection: the room published to. */
  room?: string;
  ref: string;
  id: string;
  seq: number;
  duplicate: boolean;
}

/** An `error` frame, or a client-side failure (`refresh_failed`, `bad_frame`). */
export interface ErrorDetail {
  /** On a multiplexed connection: the room the refused frame named. */
  room?: string;
  code: string;
  message: string;
  ref?: string;
}

/** A resume that `catch_up` pages over HTTP instead of replaying. */
export interface CatchUp {
  since: number;
  until: number;
}

/** What a room says on every join (`welcome`) or subscribe (`subscribed`). */
export interface WelcomeFrame {
  type: 'welcome' | 'subscribed';
  room: string;
  conn_id: string;
  epoch: string;
  head: number;
  recovered: boolean;
  heartbeat_ms: number;
  max_message_bytes: number;
  rate: { per_sec: number; burst: number };
  exp?: number;
  catch_up?: CatchUp;
}

/** The first frame of a multiplexed connection. */
export interface ConnectedFrame {
  type: 'connected';
  conn_id: string;
  heartbeat_ms: number;
  max_message_bytes: number;
  max_rooms: number;
  exp?: number;
  /** The token's `channels`: rooms the server subscribes itself, from their head. */
  channels?: string[];
}

/** Messages were missed: the room could not resume from the client's position. */
export interface Resync {
  /** The epoch the client had. */
  previousEpoch: string | null;
  /** The last seq the application saw. */
  since: number | null;
  /** The room's epoch now. */
  epoch: string;
  /** The room's newest seq; delivery continues after it. */
  head: number;
}

export interface StateDetail {
  state: State;
  reconnects: number;
  code?: number;
  reason?: string;
  delayMs?: number;
}

/** A page of a room's history. */
export interface HistoryPage {
  room: string;
  epoch: string;
  head: number;
  messages: Message[];
  truncated: boolean;
}

/** A page of a room's members over HTTP. */
export interface MembersPage {
  room: string;
  occupancy: Occupancy;
  counts_only: boolean;
  members: { sub: string; metas: Meta[] }[];
  /** The `after` of the following page; `null` on the last. */
  next: string | null;
}

export interface PublishOptions {
  /** Your idempotency key (default: a random UUID). */
  id?: string;
}

/**
 * An `EventTarget` whose `addEventListener` knows the events of map `M`
 * (beside the untyped form). A type only: at run time each class extends
 * `EventTarget` itself.
 */
declare class TypedEventTarget<M> extends EventTarget {
  addEventListener<K extends keyof M>(
    type: K,
    listener: (event: M[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof M>(
    type: K,
    listener: (event: M[K]) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}

// ---------------------------------------------------------------- backoff

export interface BackoffOptions {
  /** Cap of the first delay (default 250). */
  initialMs?: number;
  /** The cap never grows past this (default 30000). */
  maxMs?: number;
  /** A source in [0, 1), for tests (default `Math.random`). */
  random?: () => number;
}

/** Reconnect delays: exponential backoff with full jitter. */
export class Backoff {
  constructor(options?: BackoffOptions);
  initialMs: number;
  maxMs: number;
  random: () => number;
  attempt: number;
  /** The cap of the next delay, before jitter. */
  cap(): number;
  /** The next delay in ms; each call doubles the cap up to `maxMs`. */
  next(): number;
  /** After a successful connect the next failure starts small again. */
  reset(): void;
}

// ---------------------------------------------------------------- helpers

/** A UUIDv4 for idempotency keys, also outside secure contexts. */
export function randomId(): string;

/** A JWT's `exp` in seconds since the epoch, read without verifying; `null` when unreadable. */
export function tokenExpiry(token: string): number | null;

/** Milliseconds to wait before refreshing a token that expires at `expSecs`. */
export function refreshDelay(expSecs: number, nowMs: number, refreshBeforeMs: number): number;

/** Gapless, duplicate-free delivery on top of a room's sequence numbers. */
export class Sequence {
  constructor(since?: number | null, epoch?: string | null);
  lastSeq: number | null;
  epoch: string | null;
  /** Query parameters for the next connect. */
  resumeQuery(): { since?: string; epoch?: string };
  /** Takes the room's `welcome`; a {@link Resync} when messages were missed. */
  welcome(welcome: Pick<WelcomeFrame, 'epoch' | 'head' | 'recovered'>): Resync | null;
  accept(seq: number): 'deliver' | 'duplicate' | 'gap';
}

// ---------------------------------------------------------------- presence

/** One connection of a member. */
export interface Meta {
  conn_id: string;
  /** The `info` claim of that connection's token. */
  info?: unknown;
}

export interface Member {
  sub: string;
  /** By `conn_id`. */
  metas: Map<string, Meta>;
}

export interface Occupancy {
  /** Every open client socket. */
  connections: number;
  /** Distinct subs among them. */
  users: number;
  /** Distinct subs shown as members. */
  members: number;
}

export interface PresenceEventMap {
  state: CustomEvent<{ members: Member[]; countsOnly: boolean }>;
  join: CustomEvent<{ sub: string; metas: Meta[] }>;
  leave: CustomEvent<{ sub: string; metas: Meta[] }>;
  update: CustomEvent<{ sub: string; joined: Meta[]; left: Meta[]; metas: Meta[] }>;
  occupancy: CustomEvent<Occupancy>;
  countsOnly: CustomEvent<{ countsOnly: boolean }>;
}

/** Who is in a room, as the room's presence frames describe it. */
export class Presence extends TypedEventTarget<PresenceEventMap> {
  /** The members, sorted by `sub` (copies); empty while the room only counts. */
  members(): Member[];
  /** The latest counts, `null` before the first `occupancy` frame. */
  readonly occupancy: Occupancy | null;
  /** Whether the room is past its member limit and only counts. */
  readonly countsOnly: boolean;
  /** A new connection: pages of an unfinished state are dropped. */
  connected(): void;
  /** Takes a `presence_state`, `presence` or `occupancy` frame; ignores any other. */
  receive(frame: { type: string }): void;
}

// ---------------------------------------------------------------- one room

export interface ClientOptions {
  /** The worker's base URL (`https://…`, `wss://…`, or a page's `location.origin`). */
  url: string;
  room: string;
  /** A JWT with the `subscribe` right for the room. */
  token: string;
  /** Returns a fresh token; without it the client stops at a 4001 close. */
  refreshToken?: () => string | Promise<string>;
  refreshBeforeMs?: number;
  /** Resume after this seq (with `epoch`). */
  since?: number | null;
  epoch?: string | null;
  /** Ping interval; defaults to the room's `heartbeat_ms`. */
  heartbeatMs?: number;
  connectTimeoutMs?: number;
  stableAfterMs?: number;
  maxPending?: number;
  backoff?: BackoffOptions;
  /** The implementation (Node < 22: the `ws` package). */
  WebSocket?: typeof WebSocket | (new (url: string, protocols?: string | string[]) => unknown);
}

export interface ClientEventMap {
  message: CustomEvent<Message>;
  ack: CustomEvent<Ack>;
  error: CustomEvent<ErrorDetail>;
  state: CustomEvent<StateDetail & { recovered: boolean }>;
  welcome: CustomEvent<WelcomeFrame>;
  resync: CustomEvent<Resync>;
  token: CustomEvent<{ exp: number }>;
}

/** One room, kept connected: one ordered stream of messages, no duplicate, no gap. */
export class RoomcastClient extends TypedEventTarget<ClientEventMap> {
  constructor(options: ClientOptions);
  readonly state: State;
  /** Every connect after the first. */
  readonly reconnects: number;
  /** Whether the latest connect resumed without loss. */
  readonly recovered: boolean;
  /** The last seq delivered: persist it with `epoch` to resume later. */
  readonly lastSeq: number | null;
  readonly epoch: string | null;
  readonly presence: Presence;
  /** Publishes not yet acknowledged. */
  readonly pending: number;
  publish(data: unknown, options?: PublishOptions): Promise<Ack>;
  history(query?: { since?: number; limit?: number }): Promise<HistoryPage>;
  presenceMembers(query?: { after?: string; limit?: number }): Promise<MembersPage>;
  /** Leaves the room for good; pending publishes are rejected. */
  close(): void;
}

// ---------------------------------------------------------------- several rooms

export interface ConnectionOptions {
  /** The worker's base URL. */
  url: string;
  /** A JWT; each room needs the `subscribe` right in it. */
  token: string;
  refreshToken?: () => string | Promise<string>;
  refreshBeforeMs?: number;
  /** Ping interval; defaults to the connection's `heartbeat_ms`. */
  heartbeatMs?: number;
  connectTimeoutMs?: number;
  stableAfterMs?: number;
  /** Unacknowledged publishes held per subscription. */
  maxPending?: number;
  backoff?: BackoffOptions;
  WebSocket?: ClientOptions['WebSocket'];
}

/** Why a subscription ended. */
export type UnsubscribeReason = 'client' | 'forbidden' | 'closed' | 'refused' | 'connection_closed';

export interface UnsubscribedDetail {
  room: string;
  reason: UnsubscribeReason;
  /** With `refused`: the error code the subscribe was refused with. */
  code?: string;
}

export interface SubscriptionEventMap {
  subscribed: CustomEvent<WelcomeFrame>;
  message: CustomEvent<Message>;
  ack: CustomEvent<Ack>;
  resync: CustomEvent<Resync & { room: string }>;
  error: CustomEvent<ErrorDetail>;
  unsubscribed: CustomEvent<UnsubscribedDetail>;
}

/** Handlers `subscribe()` and `Subscription.on()` take, each called with its event's `detail`. */
export type SubscriptionHandlers = {
  [K in keyof SubscriptionEventMap]?: (detail: SubscriptionEventMap[K]['detail']) => void;
} & {
  /** Handlers for the presence view's events. */
  presence?: { [K in keyof PresenceEventMap]?: (detail: PresenceEventMap[K]['detail']) => void };
};

export type SubscriptionStatus = 'subscribing' | 'subscribed' | 'ended';

/** Where to resume a room: a position saved from an earlier session. */
export interface Position {
  since?: number | null;
  epoch?: string | null;
}

/** One room on a multiplexed connection. */
export class Subscription extends TypedEventTarget<SubscriptionEventMap> {
  private constructor();
  readonly room: string;
  readonly status: SubscriptionStatus;
  /** Whether the latest (re)subscribe resumed without loss. */
  readonly recovered: boolean;
  /** The last seq delivered: persist it with `epoch` to resume later. */
  readonly lastSeq: number | null;
  readonly epoch: string | null;
  readonly presence: Presence;
  /** Publishes not yet acknowledged. */
  readonly pending: number;
  /** Registers more handlers. */
  on(handlers: SubscriptionHandlers): this;
  publish(data: unknown, options?: PublishOptions): Promise<Ack>;
  /** Leaves the room; pending publishes are rejected, `unsubscribed` fires with reason `client`. */
  unsubscribe(): void;
  history(query?: { since?: number; limit?: number }): Promise<HistoryPage>;
  presenceMembers(query?: { after?: string; limit?: number }): Promise<MembersPage>;
}

export interface ConnectionEventMap {
  connected: CustomEvent<ConnectedFrame>;
  /** A room the server subscribed itself (the token's `channels`). */
  subscription: CustomEvent<Subscription>;
  state: CustomEvent<StateDetail>;
  token: CustomEvent<{ exp: number }>;
  error: CustomEvent<ErrorDetail>;
}

/** Several rooms on one WebSocket (`GET /v1/ws`). */
export class RoomcastConnection extends TypedEventTarget<ConnectionEventMap> {
  constructor(options: ConnectionOptions);
  readonly state: State;
  /** Every connect after the first. */
  readonly reconnects: number;
  /** The server's id of the connection, `null` before the first `connected`. */
  readonly connId: string | null;
  /** How many rooms one connection may subscribe, `null` before the first `connected`. */
  readonly maxRooms: number | null;
  /** The subscribed rooms, in the order they were subscribed. */
  readonly rooms: string[];
  subscribe(room: string, handlers?: SubscriptionHandlers, position?: Position): Subscription;
  /** Closes for good: every subscription ends (`connection_closed`). */
  close(): void;
}
