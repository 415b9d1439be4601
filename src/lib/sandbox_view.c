/* Read-only merged views of unpacked layers, for copy{from=stage}: the
 * builder reads a stage's files through one overlay mount instead of
 * resolving paths across its layer dirs. */
#include "sandbox.h"

#include <errno.h>
#include <sched.h>
#include <sys/mount.h>
#include <unistd.h>

#include "layer.h"
#include "userns.h"
#include "util.h"

int ib_sandbox_view_mount(char *const *lowers, const char *dir, char **mount_out, ib_error **err)
{
	*mount_out = NULL;
	cleanup_free char *empty = ib_path_join(dir, "empty");
	cleanup_free char *mnt = ib_path_join(dir, "root");
	if (ib_mkdir_p(empty, 0755, err) < 0 || ib_mkdir_p(mnt, 0755, err) < 0)
		return -1;
	if (!lowers || !lowers[0]) {
		*mount_out = steal_pointer(&empty);
		return 0;
	}
	/* overlay needs two lower dirs when there is no upper dir */
	ib_buf opt = IB_BUF_INIT;
	ib_buf_append(&opt, "lowerdir=", 9);
	for (size_t i = 0; lowers[i]; i++)
		ib_buf_appendf(&opt, "%s:", lowers[i]);
	ib_buf_appendf(&opt, "%s", empty);
	if (ib_overlay_userxattr()) /* markers are user.overlay.* there */
		ib_buf_appendf(&opt, ",userxattr");
	int r = mount("overlay", mnt, "overlay", MS_RDONLY, opt.data);
	int e = errno;
	ib_buf_free(&opt);
	/* where no overlay may be mounted (a container without CAP_SYS_ADMIN,
	 * a store on overlayfs): a copy of the layers, read by the caller only */
	if (r < 0 && (e == EPERM || e == EINVAL || e == EACCES) &&
	    ib_tree_copy_layers(lowers, mnt, err) < 0)
		return ib_error_wrap(err, "read-only view (copy)");
	if (r < 0 && e != EPERM && e != EINVAL && e != EACCES)
		return ib_error_set(err, e, "mount read-only view");
	*mount_out = steal_pointer(&mnt);
	return 0;
}

void ib_sandbox_view_unmount(const char *mount_dir)
{
	if (mount_dir)
		umount2(mount_dir, MNT_DETACH);
}

void ib_sandbox_prepare_process(void)
{
	if (geteuid() != 0)
		return;
	if (unshare(CLONE_NEWNS) == 0)
		mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);
}
