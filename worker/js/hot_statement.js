// A statement the worker makes on every publish, run from JavaScript in
// one call. From Wasm, binding its values one by one and reading the
// cursor's counts through the runtime's API takes about two dozen calls
// out of Wasm for one row. The query text never changes, so the runtime's
// cache of prepared statements serves it; what the runs counted is kept
// here until the room asks (`counts`).
export class HotStatement {
  constructor(sql, query) {
    this.sql = sql;
    this.query = query;
    this.statements = 0;
    this.rowsRead = 0;
    this.rowsWritten = 0;
  }

  // Runs the statement with `values` bound in order; a missing value binds
  // NULL (Wasm passes an absent optional as `undefined`, which SQL refuses).
  run(...values) {
    for (let i = 0; i < values.length; i++) {
      if (values[i] === undefined) {
        values[i] = null;
      }
    }
    // A statement that returns no rows has run when `exec` returns.
    const cursor = this.sql.exec(this.query, ...values);
    this.statements += 1;
    this.rowsRead += cursor.rowsRead;
    this.rowsWritten += cursor.rowsWritten;
  }

  // [statements, rows read, rows written] since the statement was made.
  counts() {
    return [this.statements, this.rowsRead, this.rowsWritten];
  }
}
