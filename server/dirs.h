/*
 * dirs.h - the daemon's directories and the files in them, opened so that no
 * other user can redirect them: the socket directory, --state-dir and the
 * file tier's directory.
 *
 * A directory is trusted when every component of its path, from /, is owned
 * by root or the daemon's uid and is not writable by anyone else - except a
 * sticky directory like /tmp, whose entry on the path must then be the
 * daemon's own - and the directory itself is the daemon's and writable by no
 * one else.  Symbolic links on the path are followed only where they sit in
 * such a trusted directory and belong to root or the daemon.  What is missing
 * is made, mode 0700 (0750 and the given group when a group may come in).
 * Never: follows a symbolic link as the last component of a file it opens,
 * truncates or writes a file that is not the daemon's, changes a directory
 * it did not make, except to give the socket directory its group.
 * Locking: none; each call works on its arguments only, on any thread.
 */
#ifndef PINPOOL_SRV_DIRS_H
#define PINPOOL_SRV_DIRS_H

#include <stddef.h>
#include <sys/types.h>

#define SRV_NO_GROUP ((gid_t)-1)

/*
 * Open the directory at the absolute path (called what in messages: "the
 * socket directory", "--state-dir"), making what is missing, after the checks
 * above.  group SRV_NO_GROUP: what is made is 0700; else it is 0750 and of
 * that group, and so is the directory itself when it exists already.
 * Returns an O_RDONLY|O_DIRECTORY|O_CLOEXEC descriptor (the caller closes
 * it), or a negative error with a message in err that names the path and
 * the fix.
 */
int srv_dir_open(const char *path, const char *what, gid_t group, char *err, size_t errlen);

/*
 * openat(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC, mode), then refuse (and
 * close) what is not a regular file of the daemon's uid with one link: a file
 * planted there by someone else, a hard link to another file.  shown is its
 * path for messages.  Returns the descriptor, or a negative error with err.
 * Check before O_TRUNC: pass it only where the directory is the daemon's.
 */
int srv_file_open_at(int dirfd, const char *name, int flags, mode_t mode, const char *shown,
                     char *err, size_t errlen);

#endif
