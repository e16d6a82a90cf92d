// Small helpers over the SQLite C API shared by the stores (ota/, telemetry/).
// Header-only: only code that links SQLite includes it.
#ifndef TERND_BASE_SQLITE_UTIL_H_
#define TERND_BASE_SQLITE_UTIL_H_

#include <sqlite3.h>

#include <cstdint>
#include <string>

#include "base/status.h"

namespace ternd {

// "<path>: <what>: <SQLite's message>", INTERNAL.
inline Status SqliteError(sqlite3* db, const std::string& path,
                          const char* what) {
  return Errorf(StatusCode::kInternal, "%s: %s: %s", path.c_str(), what,
                db ? sqlite3_errmsg(db) : "cannot open");
}

// Runs `sql` (one or more statements); errors name the database.
inline Status SqliteExec(sqlite3* db, const std::string& path,
                         const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    Status s = Errorf(StatusCode::kInternal, "%s: %s", path.c_str(),
                      err ? err : sqlite3_errmsg(db));
    sqlite3_free(err);
    return s;
  }
  return Status::Ok();
}

// A prepared statement that finalizes itself.
class SqliteStmt {
 public:
  SqliteStmt(sqlite3* db, const char* sql) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) {
      stmt_ = nullptr;
    }
  }
  ~SqliteStmt() { sqlite3_finalize(stmt_); }
  SqliteStmt(const SqliteStmt&) = delete;
  SqliteStmt& operator=(const SqliteStmt&) = delete;
  bool ok() const { return stmt_ != nullptr; }
  sqlite3_stmt* get() { return stmt_; }
  int Step() { return sqlite3_step(stmt_); }
  void Blob(int i, const std::string& b) {
    sqlite3_bind_blob(stmt_, i, b.data(), static_cast<int>(b.size()),
                      SQLITE_TRANSIENT);
  }
  void Text(int i, const std::string& t) {
    sqlite3_bind_text(stmt_, i, t.data(), static_cast<int>(t.size()),
                      SQLITE_TRANSIENT);
  }
  void Int(int i, int64_t v) { sqlite3_bind_int64(stmt_, i, v); }
  std::string ColumnBlob(int i) {
    const void* p = sqlite3_column_blob(stmt_, i);
    const int n = sqlite3_column_bytes(stmt_, i);
    return p ? std::string(static_cast<const char*>(p), n) : std::string();
  }
  std::string ColumnText(int i) {
    const unsigned char* p = sqlite3_column_text(stmt_, i);
    const int n = sqlite3_column_bytes(stmt_, i);
    return p ? std::string(reinterpret_cast<const char*>(p), n) : std::string();
  }
  int64_t ColumnInt(int i) { return sqlite3_column_int64(stmt_, i); }

 private:
  sqlite3_stmt* stmt_ = nullptr;
};

}  // namespace ternd

#endif  // TERND_BASE_SQLITE_UTIL_H_
