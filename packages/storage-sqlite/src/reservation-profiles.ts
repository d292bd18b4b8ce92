import type { BudgetState, PendingCall, ScopeRef } from '@spendguard/core/storage';

/** What a key's calls share in their reservations: the scopes held, and who the call is for. */
export interface ReservationProfile {
  /** Frozen: copy before changing. */
  readonly scopes: readonly ScopeRef[];
  /** `null` for a reservation made without a pending call. */
  readonly call: Readonly<ProfileCall> | null;
}

/** The attribution a profile holds; the rest of a `PendingCall` (request id, start, end user, tags) is the row's own. */
export type ProfileCall = Pick<PendingCall, 'callType' | 'apiKeyHash' | 'model' | 'userId' | 'teamId'>;

export interface ProfileStatements {
  /** Answers the new row's id, or nothing when that body is already stored. */
  insertProfile: { get(body: string): { id: number } | undefined };
  selectProfileId: { get(body: string): { id: number } | undefined };
  selectProfile: { get(id: number): { body: string } | undefined };
}

/** A profile's id as `idFor` found it; `profile` is set when it was not cached (new to this connection). */
export interface ProfileRef {
  id: number;
  key: string;
  profile: ReservationProfile | null;
}

/** How many profiles each cache keeps before it starts over (a miss costs one indexed read). */
const LIMIT = 4096;

/**
 * The `reservation_profiles` of one database (migration 10), found by content on the way in and by
 * id on the way out, both cached. An id is only cached once the row that holds it is known to be
 * committed: one written in the open transaction waits in `#fresh` until `committed()` (a rolled-back
 * id may be handed out again for another body). Ids read back from committed reservations are always
 * committed. One instance per connection; the group commit tells it how each transaction ended.
 */
export class ReservationProfiles {
  readonly #s: ProfileStatements;
  readonly #ids = new Map<string, number>();
  readonly #byId = new Map<number, ReservationProfile>();
  /** Written in the open transaction, by lookup key. */
  readonly #fresh = new Map<string, { id: number; profile: ReservationProfile }>();

  constructor(s: ProfileStatements) {
    this.#s = s;
  }

  /**
   * The id of the profile for these counters' scopes and this call, writing it when it is new. Inside a
   * write transaction; hand the answer to `written()` once the reservation that points to it is written.
   */
  idFor(states: readonly BudgetState[], call: PendingCall | undefined): ProfileRef {
    const key = lookupKey(states, call);
    const id = this.#ids.get(key) ?? this.#fresh.get(key)?.id;
    if (id !== undefined) return { id, key, profile: null };
    const profile: ReservationProfile = Object.freeze({
      scopes: Object.freeze(states.map(({ scope }) => Object.freeze({ kind: scope.kind, id: scope.id }))),
      call: call
        ? Object.freeze({
            callType: call.callType,
            apiKeyHash: call.apiKeyHash,
            model: call.model,
            userId: call.userId,
            teamId: call.teamId,
          })
        : null,
    });
    const body = JSON.stringify([profile.scopes, profile.call]);
    const row = this.#s.insertProfile.get(body) ?? this.#s.selectProfileId.get(body);
    if (!row) throw new Error('reservation profile neither inserted nor found');
    return { id: row.id, key, profile };
  }

  /** After the reservation row is written: a profile new to this cache is kept until the transaction ends. */
  written(ref: ProfileRef): void {
    if (ref.profile) this.#fresh.set(ref.key, { id: ref.id, profile: ref.profile });
  }

  /** A profile by id: a reservation row's. */
  get(id: number): ReservationProfile {
    const cached = this.#byId.get(id);
    if (cached) return cached;
    for (const fresh of this.#fresh.values()) if (fresh.id === id) return fresh.profile;
    const profile = this.#read(id);
    // Read through a committed reservation (or one this transaction wrote, whose profile id is then in
    // #fresh above): the row is committed, so its id cannot be handed out again.
    remember(this.#byId, id, profile);
    return profile;
  }

  /** The open transaction committed: its new profiles are now safe to find by content and id. */
  committed(): void {
    for (const [key, { id, profile }] of this.#fresh) {
      remember(this.#ids, key, id);
      remember(this.#byId, id, profile);
    }
    this.#fresh.clear();
  }

  /** The open transaction rolled back: what it wrote is gone. */
  rolledBack(): void {
    this.#fresh.clear();
  }

  #read(id: number): ReservationProfile {
    const row = this.#s.selectProfile.get(id);
    if (!row) throw new Error(`no reservation profile ${id}`);
    const [scopes, call] = JSON.parse(row.body) as [ScopeRef[], ProfileCall | null];
    return Object.freeze({
      scopes: Object.freeze(scopes.map((s) => Object.freeze({ kind: s.kind, id: s.id }))),
      call: call && Object.freeze(call),
    });
  }
}

function remember<K, V>(map: Map<K, V>, key: K, value: V): void {
  if (map.size >= LIMIT) map.clear();
  map.set(key, value);
}

/**
 * A string naming the profile's content exactly: each part carries its length, since an id (or a
 * model name) can hold any character and no separator alone would keep two parts from running together.
 */
function lookupKey(states: readonly BudgetState[], call: PendingCall | undefined): string {
  let key = '';
  for (const { scope } of states) key += `${scope.kind} ${scope.id.length} ${scope.id};`;
  if (!call) return `${key}-`;
  key += `+${call.callType.length} ${call.callType}${call.apiKeyHash.length} ${call.apiKeyHash}`;
  key += `${call.model.length} ${call.model}`;
  key += call.userId === null ? 'n' : `${call.userId.length} ${call.userId}`;
  key += call.teamId === null ? 'n' : `${call.teamId.length} ${call.teamId}`;
  return key;
}
