# The CUDA backend (src/backend/cuda, issue #17): -DTAPPA_CUDA=ON. Included by CMakeLists.txt after
# tappa_core is defined. Needs nvcc (CUDA 12.4 or newer); no GPU is needed to build, and the CUDA
# tests skip with a message when none is present at run time.
#
# Kernels are compiled for Hopper (sm_90: the H200 this backend is tuned for) unless
# CMAKE_CUDA_ARCHITECTURES says otherwise; PTX is embedded as well, so newer GPUs JIT it.
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  message(FATAL_ERROR "TAPPA_CUDA=ON but no CUDA compiler was found (set CUDACXX or put nvcc on PATH, "
                      "e.g. /usr/local/cuda/bin), or configure with -DTAPPA_CUDA=OFF")
endif()
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 90)
endif()
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)
# CMake before 3.26 does not know nvcc's C++20 flag (nvcc has had it since 12.0).
if(NOT CMAKE_CUDA20_STANDARD_COMPILE_OPTION)
  set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
  set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
endif()
set_target_properties(tappa_core PROPERTIES CUDA_STANDARD 20 CUDA_STANDARD_REQUIRED ON
                                            CUDA_ARCHITECTURES "${CMAKE_CUDA_ARCHITECTURES}")
if(TAPPA_CCACHE AND NOT CMAKE_CUDA_COMPILER_LAUNCHER)
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${TAPPA_CCACHE})
endif()

file(GLOB TAPPA_CUDA_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/backend/cuda/*.cu)
target_sources(tappa_core PRIVATE ${TAPPA_CUDA_SOURCES})
# -lineinfo: kernels keep source lines for compute-sanitizer and ncu; --expt-relaxed-constexpr lets
# device code call constexpr host helpers (the random-weight generator is shared with the host).
target_compile_options(tappa_core PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo --expt-relaxed-constexpr -Xcompiler=-Wno-unused-parameter>)
target_compile_definitions(tappa_core PUBLIC TAPPA_HAVE_CUDA=1)
# The static runtime: a binary built here runs where only the driver and cuBLAS are installed.
set_target_properties(tappa_core PROPERTIES CUDA_RUNTIME_LIBRARY Static CUDA_SEPARABLE_COMPILATION OFF)
target_link_libraries(tappa_core PUBLIC CUDA::cudart_static CUDA::cublas CUDA::cublasLt)
message(STATUS "tappa: CUDA backend ON (nvcc ${CMAKE_CUDA_COMPILER_VERSION}, architectures ${CMAKE_CUDA_ARCHITECTURES})")
