// Validates KEDA objects against KEDA's CRD schemas (@kubernetes-models/keda), offline.
// Reads a JSON array of objects on stdin; prints one line per invalid object and exits 1 if there is any.
import { readFileSync } from "node:fs";
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";

let invalid = 0;
for (const object of JSON.parse(readFileSync(0, "utf8"))) {
  const Model = object.apiVersion === "keda.sh/v1alpha1" ? keda[object.kind] : undefined;
  try {
    if (!Model) throw new Error(`${object.apiVersion} ${object.kind} is not a KEDA kind`);
    new Model(object).validate();
  } catch (error) {
    invalid += 1;
    console.log(`${object.kind}/${object.metadata?.name}: ${error.message}`);
  }
}
process.exit(invalid ? 1 : 0);
