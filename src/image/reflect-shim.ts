// Minimal Reflect metadata polyfill: @peculiar/x509 pulls in tsyringe, which refuses to load
// without Reflect.getMetadata, and no polyfill package is a dependency. Import before x509.

type Key = unknown;
const meta = new WeakMap<object, Map<PropertyKey | undefined, Map<Key, unknown>>>();
function own(target: object, prop: PropertyKey | undefined, create: boolean) {
  let byProp = meta.get(target);
  if (!byProp) {
    if (!create) return undefined;
    meta.set(target, (byProp = new Map()));
  }
  let m = byProp.get(prop);
  if (!m && create) byProp.set(prop, (m = new Map()));
  return m;
}
const R = Reflect as any;
if (typeof R.getMetadata !== "function") {
  R.defineMetadata = (k: Key, v: unknown, target: object, prop?: PropertyKey) => own(target, prop, true)!.set(k, v);
  R.getOwnMetadata = (k: Key, target: object, prop?: PropertyKey) => own(target, prop, false)?.get(k);
  R.hasOwnMetadata = (k: Key, target: object, prop?: PropertyKey) => own(target, prop, false)?.has(k) ?? false;
  R.getMetadata = (k: Key, target: object, prop?: PropertyKey) => {
    for (let t: any = target; t; t = Object.getPrototypeOf(t)) {
      const m = own(t, prop, false);
      if (m?.has(k)) return m.get(k);
    }
    return undefined;
  };
  R.hasMetadata = (k: Key, target: object, prop?: PropertyKey) => R.getMetadata(k, target, prop) !== undefined;
  R.metadata = (k: Key, v: unknown) => (target: object, prop?: PropertyKey) => R.defineMetadata(k, v, target, prop);
}
export {};
