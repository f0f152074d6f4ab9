/*
** version.h: what SQLite the engine owns.
**
** The engine links Debian's static libsqlite3.a with hidden symbols; this tiny
** unit lets Python ask the private copy (not the system shared library that
** the stdlib sqlite3 module loads) which version it is.
*/
#ifndef RUSTYMT_VERSION_H
#define RUSTYMT_VERSION_H

/* The version string of the SQLite copy linked into the engine. */
const char *rmt_sqlite_version(void);

#endif
