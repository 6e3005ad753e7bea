# Cross-compiling csrc/ for aarch64 on x86-64 Debian (gcc-aarch64-linux-gnu, qemu-user-static), from the
# repository root; ctest runs the test program under qemu:
#   cmake -S csrc -B build-arm -DCMAKE_TOOLCHAIN_FILE="$PWD/csrc/cmake/aarch64-linux-gnu.cmake"
#   cmake --build build-arm && ctest --test-dir build-arm
# Give this file's path absolute: CMake looks for a relative one in the build folder, then in the source
# folder (csrc/), never in the current directory (`--toolchain` does the same).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64-static -L /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
